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

use super::link::VIEW_HISTORY;
use super::{AppError, AppMember, AppView, GroupName, GroupOptions};
use crate::id::NodeId;
use crate::wire::{decode_body, decode_message, encode_body};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use uuid::Uuid;

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

/// Who asked for an op: the MI's id and its request counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// The MI (a UUID v7 taken when it starts).
    pub mi: Uuid,
    /// Its request counter.
    pub seq: u64,
}

/// One application-group change, as the core-set commits it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppOp {
    /// Create a group (it starts at view 0, with no members).
    Create {
        /// Who asked.
        req: RequestId,
        /// Its name.
        group: GroupName,
        /// Its options.
        options: GroupOptions,
    },
    /// A process joins a group through MI `req.mi`.
    Join {
        /// Who asked (the member's MI).
        req: RequestId,
        /// The group.
        group: GroupName,
        /// The member (its id chosen by the MI, a UUID v7).
        member: AppMember,
    },
    /// A member leaves (or its process died: its MI saw the connection
    /// close).
    Leave {
        /// Who asked.
        req: RequestId,
        /// The group.
        group: GroupName,
        /// The member's id.
        member: Uuid,
    },
    /// MIs failed (a crash, or the far side of a partition): every member
    /// they hosted is removed, in one view per group; then each group's
    /// survive rule decides whether the rest keeps running here (if not,
    /// the rest is removed as well, and reported lost).
    MiFailed {
        /// The MIs, each with the attachment (its `attach_seq`) the
        /// submitter saw fail: an MI that attached again since is spared.
        mis: Vec<(Uuid, u64)>,
    },
    /// After a core-set merge, the absorbed side's MI attachments (each
    /// kept unless this side knows a later attachment of that MI).
    Readmit {
        /// The MIs and their records.
        mis: Vec<(Uuid, MiRecord)>,
    },
    /// After a core-set merge, one group as the absorbed side had it (one
    /// op per group, or several for a big group, each with part of the
    /// members). The group's merge rule decides whether these members join
    /// this side's part; those that do not are reported lost.
    Reform {
        /// The group.
        group: GroupName,
        /// Its options (used if this side does not know the group).
        options: GroupOptions,
        /// The absorbed side's view number of the group.
        number: u64,
        /// The absorbed side's last view before the partition, if it had
        /// one (what the merge rule compares with).
        base: Option<Vec<AppMember>>,
        /// Members, with the MI that hosts each.
        members: Vec<(AppMember, Uuid)>,
    },
    /// MI `req.mi` attached to `mserver` (first, or again after a
    /// failover).
    Attach {
        /// Who asked (the MI).
        req: RequestId,
        /// Its host name (the `host` of its members).
        host: String,
        /// The mserver it attached to.
        mserver: NodeId,
    },
}

impl AppOp {
    /// The payload for `CoreSet::submit_app`.
    pub fn encode(&self) -> Result<Vec<u8>, AppError> {
        encode_body(self).map_err(|e| AppError::Internal(format!("cannot encode an app op: {e}")))
    }

    /// An op from a committed payload (bounded; names are validated on
    /// decode).
    pub fn decode(bytes: &[u8]) -> Result<AppOp, AppError> {
        decode_body(bytes).map_err(|e| AppError::Internal(format!("bad app op: {e}")))
    }

    /// The request it answers (none for `MiFailed`).
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            AppOp::Create { req, .. }
            | AppOp::Join { req, .. }
            | AppOp::Leave { req, .. }
            | AppOp::Attach { req, .. } => Some(*req),
            AppOp::MiFailed { .. } | AppOp::Readmit { .. } | AppOp::Reform { .. } => None,
        }
    }
}

/// What an op did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppReply {
    /// The group was created.
    Created,
    /// The member joined; the group's first view with it.
    Joined(AppView),
    /// The member left.
    Left,
    /// The MIs' members were removed (from this many groups).
    MiRemoved(usize),
    /// Attachments or a group part of an absorbed side were taken in.
    Reformed,
    /// The MI's attachment was recorded.
    Attached,
}

/// Where an MI is attached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MiRecord {
    /// The mserver it is attached to.
    pub mserver: NodeId,
    /// Its host name.
    pub host: String,
    /// The request counter of its latest attachment (its epoch).
    pub attach_seq: u64,
}

/// The outcome of applying one op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The request it answers (none for `MiFailed`).
    pub req: Option<RequestId>,
    /// Its result, the same at every mserver.
    pub result: Result<AppReply, AppError>,
    /// The views of the groups it changed: the commit's view of each (ops
    /// of one commit that change the same group share it); none for a
    /// duplicate or a refused op.
    pub views: Vec<AppView>,
    /// It was a duplicate of an op applied before.
    pub duplicate: bool,
    /// Members removed without asking, or not taken in at a merge, that
    /// their MI must be told about: `(group, member, MI)`.
    pub lost: Vec<(GroupName, Uuid, Uuid)>,
}

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

    fn apply_all(&mut self, ops: Vec<Result<AppOp, AppError>>) -> Vec<Applied> {
        let mut out: Vec<(Applied, Vec<GroupName>, Option<Uuid>)> = Vec::with_capacity(ops.len());
        let mut dirty: Vec<GroupName> = Vec::new();
        for op in ops {
            self.applied += 1;
            let op = match op {
                Ok(op) => op,
                Err(e) => {
                    out.push((refused(e), Vec::new(), None));
                    continue;
                }
            };
            let req = op.request_id();
            if let Some(result) = req.and_then(|r| self.remembered.get(&r)) {
                out.push((
                    Applied {
                        req,
                        result: result.clone(),
                        views: Vec::new(),
                        duplicate: true,
                        lost: Vec::new(),
                    },
                    Vec::new(),
                    None,
                ));
                continue;
            }
            let mut lost = Vec::new();
            let (result, touched) = match &op {
                AppOp::Create { group, options, .. } => self.create(group, options),
                AppOp::Join { req, group, member } => self.join(group, member, req.mi),
                AppOp::Leave { group, member, .. } => self.leave(group, *member),
                AppOp::MiFailed { mis } => self.mi_failed(mis, &mut lost),
                AppOp::Attach { req, host, mserver } => self.attach(*req, host, *mserver),
                AppOp::Readmit { mis } => self.readmit(mis),
                AppOp::Reform {
                    group,
                    options,
                    number,
                    base,
                    members,
                } => self.reform(group, options, *number, base.as_deref(), members, &mut lost),
            };
            if let Some(r) = req {
                // Now, so a duplicate later in the same commit is one.
                self.remember(r, result.clone());
            }
            for t in &touched {
                if !dirty.contains(t) {
                    dirty.push(t.clone());
                }
            }
            let joiner = match &op {
                AppOp::Join { member, .. } => Some(member.id),
                _ => None,
            };
            out.push((
                Applied {
                    req,
                    result,
                    views: Vec::new(),
                    duplicate: false,
                    lost,
                },
                touched,
                joiner,
            ));
        }
        // One view per changed group for the whole commit.
        let mut finals: BTreeMap<GroupName, AppView> = BTreeMap::new();
        for name in dirty {
            if let Some(g) = self.groups.get_mut(&name) {
                let view = g.advance(&name);
                finals.insert(name, view);
            }
        }
        let mut result = Vec::with_capacity(out.len());
        for (mut applied, touched, joiner) in out {
            applied.views = touched
                .iter()
                .filter_map(|t| finals.get(t).cloned())
                .collect();
            if applied.duplicate {
                result.push(applied);
                continue;
            }
            let mut patched = None;
            if let Ok(AppReply::Joined(v)) = &applied.result {
                if let Some(f) = finals.get(&v.group) {
                    // A later op of the same commit may have removed the
                    // joiner again (its MI failed): then the join failed.
                    patched = Some(if joiner.is_some_and(|id| f.contains(id)) {
                        Ok(AppReply::Joined(f.clone()))
                    } else {
                        Err(AppError::Disconnected)
                    });
                }
            }
            if let Some(p) = patched {
                applied.result = p;
                if let Some(r) = applied.req {
                    if let Some(slot) = self.remembered.get_mut(&r) {
                        *slot = applied.result.clone();
                    }
                }
            }
            result.push(applied);
        }
        // Duplicates answer what their original answered (its commit's
        // view, patched above if that was this commit).
        for applied in result.iter_mut().filter(|a| a.duplicate) {
            if let Some(r) = applied.req.and_then(|r| self.remembered.get(&r)) {
                applied.result = r.clone();
            }
        }
        result
    }

    fn remember(&mut self, r: RequestId, result: Result<AppReply, AppError>) {
        self.remembered.insert(r, result);
        self.order.push_back(r);
        while self.order.len() > MAX_REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.remembered.remove(&old);
            }
        }
    }

    fn create(
        &mut self,
        group: &GroupName,
        options: &GroupOptions,
    ) -> (Result<AppReply, AppError>, Vec<GroupName>) {
        if let Err(e) = options.validate() {
            return (Err(e), Vec::new());
        }
        if self.groups.contains_key(group) {
            return (Err(AppError::NameTaken), Vec::new());
        }
        if self.groups.len() >= MAX_GROUPS {
            return (
                Err(AppError::InvalidOptions(format!(
                    "this core-set holds {MAX_GROUPS} groups already"
                ))),
                Vec::new(),
            );
        }
        self.groups.insert(
            group.clone(),
            Group {
                options: options.clone(),
                number: 0,
                members: Vec::new(),
                history: VecDeque::new(),
                base: None,
                suspended: false,
            },
        );
        (Ok(AppReply::Created), Vec::new())
    }

    fn join(
        &mut self,
        group: &GroupName,
        member: &AppMember,
        mi: Uuid,
    ) -> (Result<AppReply, AppError>, Vec<GroupName>) {
        if !self.mis.contains_key(&mi) {
            return (Err(AppError::Disconnected), Vec::new());
        }
        let Some(g) = self.groups.get_mut(group) else {
            return (Err(AppError::NoSuchGroup), Vec::new());
        };
        if g.suspended {
            return (Err(AppError::Busy), Vec::new());
        }
        if g.members.iter().any(|(m, _)| m.id == member.id) {
            return (Err(AppError::AlreadyMember), Vec::new());
        }
        if g.members.iter().any(|(m, _)| m.name == member.name) {
            return (Err(AppError::NameTaken), Vec::new());
        }
        if g.members.len() >= MAX_GROUP_MEMBERS {
            return (
                Err(AppError::InvalidOptions(format!(
                    "the group has {MAX_GROUP_MEMBERS} members already"
                ))),
                Vec::new(),
            );
        }
        g.members.push((member.clone(), mi));
        // The commit's view replaces this one (`apply_all`).
        (Ok(AppReply::Joined(g.view(group))), vec![group.clone()])
    }

    fn leave(
        &mut self,
        group: &GroupName,
        member: Uuid,
    ) -> (Result<AppReply, AppError>, Vec<GroupName>) {
        let Some(g) = self.groups.get_mut(group) else {
            return (Err(AppError::NoSuchGroup), Vec::new());
        };
        let before = g.members.len();
        g.members.retain(|(m, _)| m.id != member);
        if g.members.len() == before {
            return (Err(AppError::NotMember), Vec::new());
        }
        (Ok(AppReply::Left), vec![group.clone()])
    }

    fn mi_failed(
        &mut self,
        mis: &[(Uuid, u64)],
        lost: &mut Vec<(GroupName, Uuid, Uuid)>,
    ) -> (Result<AppReply, AppError>, Vec<GroupName>) {
        let failed: BTreeSet<Uuid> = mis
            .iter()
            .filter(|(mi, seq)| !matches!(self.mis.get(mi), Some(r) if r.attach_seq != *seq))
            .map(|(mi, _)| *mi)
            .collect();
        for mi in &failed {
            self.mis.remove(mi);
        }
        let mut views = Vec::new();
        for (name, g) in self.groups.iter_mut() {
            if !g.members.iter().any(|(_, host)| failed.contains(host)) {
                continue;
            }
            let before: Vec<AppMember> = g.members.iter().map(|(m, _)| m.clone()).collect();
            g.members.retain(|(_, host)| !failed.contains(host));
            let part: Vec<AppMember> = g.members.iter().map(|(m, _)| m.clone()).collect();
            if !g.options.survive.survives(&before, &part) {
                // This part does not keep running: it is terminated.
                for (m, host) in g.members.drain(..) {
                    lost.push((name.clone(), m.id, host));
                }
                g.suspended = true;
            }
            g.base = Some(before);
            views.push(name.clone());
        }
        (Ok(AppReply::MiRemoved(views.len())), views)
    }

    fn readmit(
        &mut self,
        mis: &[(Uuid, MiRecord)],
    ) -> (Result<AppReply, AppError>, Vec<GroupName>) {
        for (mi, record) in mis {
            if record.host.is_empty() || record.host.len() > MAX_HOST {
                continue;
            }
            match self.mis.get(mi) {
                Some(known) if known.attach_seq >= record.attach_seq => {}
                Some(_) => {
                    self.mis.insert(*mi, record.clone());
                }
                None if self.mis.len() < MAX_MIS => {
                    self.mis.insert(*mi, record.clone());
                }
                None => {}
            }
        }
        (Ok(AppReply::Reformed), Vec::new())
    }

    fn reform(
        &mut self,
        group: &GroupName,
        options: &GroupOptions,
        number: u64,
        base: Option<&[AppMember]>,
        members: &[(AppMember, Uuid)],
        lost: &mut Vec<(GroupName, Uuid, Uuid)>,
    ) -> (Result<AppReply, AppError>, Vec<GroupName>) {
        if !self.groups.contains_key(group) {
            if self.groups.len() >= MAX_GROUPS || options.validate().is_err() {
                for (m, mi) in members {
                    lost.push((group.clone(), m.id, *mi));
                }
                return (Ok(AppReply::Reformed), Vec::new());
            }
            self.groups.insert(
                group.clone(),
                Group {
                    options: options.clone(),
                    number,
                    members: Vec::new(),
                    history: VecDeque::new(),
                    base: base.map(<[AppMember]>::to_vec),
                    suspended: false,
                },
            );
        }
        let mis = &self.mis;
        let Some(g) = self.groups.get_mut(group) else {
            return (Ok(AppReply::Reformed), Vec::new());
        };
        // Members this side has already (a duplicate op, or a member both
        // sides kept) change nothing.
        let incoming: Vec<&(AppMember, Uuid)> = members
            .iter()
            .filter(|(m, _)| !g.members.iter().any(|(k, _)| k.id == m.id))
            .collect();
        if incoming.is_empty() {
            return (Ok(AppReply::Reformed), Vec::new());
        }
        let here: Vec<AppMember> = g.members.iter().map(|(m, _)| m.clone()).collect();
        let theirs: Vec<AppMember> = members.iter().map(|(m, _)| m.clone()).collect();
        let last: Vec<AppMember> = match (g.base.as_deref(), base) {
            (Some(b), _) | (None, Some(b)) => b.to_vec(),
            (None, None) => here.iter().chain(theirs.iter()).cloned().collect(),
        };
        let merges = here.is_empty() || g.options.merge.merges(&last, &here, &theirs);
        let mut added = false;
        for (m, mi) in incoming {
            let clash = g.members.iter().any(|(k, _)| k.name == m.name);
            if !merges || clash || !mis.contains_key(mi) || g.members.len() >= MAX_GROUP_MEMBERS {
                lost.push((group.clone(), m.id, *mi));
            } else {
                g.members.push((m.clone(), *mi));
                added = true;
            }
        }
        if !added {
            return (Ok(AppReply::Reformed), Vec::new());
        }
        // The merged view's number is above both sides'.
        g.number = g.number.max(number);
        g.base = None;
        g.suspended = false;
        (Ok(AppReply::Reformed), vec![group.clone()])
    }

    fn attach(
        &mut self,
        req: RequestId,
        host: &str,
        mserver: NodeId,
    ) -> (Result<AppReply, AppError>, Vec<GroupName>) {
        if host.is_empty() || host.len() > MAX_HOST {
            return (
                Err(AppError::InvalidName(format!(
                    "an MI host name has 1 to {MAX_HOST} bytes"
                ))),
                Vec::new(),
            );
        }
        match self.mis.get_mut(&req.mi) {
            Some(record) => {
                if req.seq > record.attach_seq {
                    record.mserver = mserver;
                    record.attach_seq = req.seq;
                    record.host = host.to_string();
                }
            }
            None => {
                if self.mis.len() >= MAX_MIS {
                    return (Err(AppError::TooManyClients), Vec::new());
                }
                self.mis.insert(
                    req.mi,
                    MiRecord {
                        mserver,
                        host: host.to_string(),
                        attach_seq: req.seq,
                    },
                );
            }
        }
        (Ok(AppReply::Attached), Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appgroup::{MemberKind, MemberName};

    fn gname(s: &str) -> GroupName {
        GroupName::parse(s).expect("group name")
    }

    fn req(mi: u128, seq: u64) -> RequestId {
        RequestId {
            mi: Uuid::from_u128(mi),
            seq,
        }
    }

    fn member(name: &str, id: u128) -> AppMember {
        AppMember {
            name: MemberName::parse(name).expect("name"),
            kind: MemberKind::default(),
            id: Uuid::from_u128(id),
            host: "h".into(),
        }
    }

    fn attach(r: &mut Registry, mi: u128) {
        let out = r.apply(&AppOp::Attach {
            req: req(mi, 0),
            host: "h".into(),
            mserver: NodeId::v4(127, 0, 0, 1, 7200),
        });
        assert_eq!(out.result, Ok(AppReply::Attached));
    }

    fn create(r: &mut Registry, g: &str, seq: u64) -> Applied {
        for mi in [1, 2, 7, 8] {
            if r.mi(&Uuid::from_u128(mi)).is_none() {
                attach(r, mi);
            }
        }
        r.apply(&AppOp::Create {
            req: req(1, seq),
            group: gname(g),
            options: GroupOptions::default(),
        })
    }

    #[test]
    fn create_join_leave_number_the_views() {
        let mut r = Registry::new();
        assert_eq!(create(&mut r, "g", 1).result, Ok(AppReply::Created));
        assert_eq!(create(&mut r, "g", 2).result, Err(AppError::NameTaken));
        let a = r.apply(&AppOp::Join {
            req: req(1, 3),
            group: gname("g"),
            member: member("a", 10),
        });
        assert_eq!(a.views.len(), 1);
        assert_eq!(a.views[0].number, 1);
        let b = r.apply(&AppOp::Join {
            req: req(2, 1),
            group: gname("g"),
            member: member("b", 11),
        });
        assert_eq!(b.views[0].number, 2);
        assert_eq!(b.views[0].members.len(), 2);
        let clash = r.apply(&AppOp::Join {
            req: req(2, 2),
            group: gname("g"),
            member: member("a", 12),
        });
        assert_eq!(clash.result, Err(AppError::NameTaken));
        assert!(clash.views.is_empty());
        let nogroup = r.apply(&AppOp::Join {
            req: req(2, 3),
            group: gname("nope"),
            member: member("c", 13),
        });
        assert_eq!(nogroup.result, Err(AppError::NoSuchGroup));
        let left = r.apply(&AppOp::Leave {
            req: req(1, 4),
            group: gname("g"),
            member: Uuid::from_u128(10),
        });
        assert_eq!(left.result, Ok(AppReply::Left));
        assert_eq!(left.views[0].number, 3);
        let again = r.apply(&AppOp::Leave {
            req: req(1, 5),
            group: gname("g"),
            member: Uuid::from_u128(10),
        });
        assert_eq!(again.result, Err(AppError::NotMember));
    }

    #[test]
    fn duplicates_change_nothing_and_get_the_same_answer() {
        let mut r = Registry::new();
        create(&mut r, "g", 1);
        let op = AppOp::Join {
            req: req(1, 2),
            group: gname("g"),
            member: member("a", 10),
        };
        let first = r.apply(&op);
        let second = r.apply(&op);
        assert!(second.duplicate);
        assert_eq!(second.result, first.result);
        assert!(second.views.is_empty());
        assert_eq!(r.view(&gname("g")).map(|v| v.number), Some(1));
    }

    #[test]
    fn an_mi_failure_removes_all_its_members_in_one_view_per_group() {
        let mut r = Registry::new();
        create(&mut r, "g", 1);
        create(&mut r, "h", 2);
        for (i, (g, mi)) in [("g", 7), ("g", 7), ("g", 8), ("h", 7), ("h", 8)]
            .into_iter()
            .enumerate()
        {
            let n = u128::try_from(i).expect("small") + 100;
            r.apply(&AppOp::Join {
                req: req(mi, n as u64),
                group: gname(g),
                member: member(&format!("m{i}"), n),
            });
        }
        let out = r.apply(&AppOp::MiFailed {
            mis: vec![(Uuid::from_u128(7), 0)],
        });
        assert_eq!(out.result, Ok(AppReply::MiRemoved(2)));
        assert_eq!(out.views.len(), 2);
        assert_eq!(out.views[0].members.len(), 1);
        assert_eq!(out.views[0].number, 4);
        assert_eq!(out.views[1].members.len(), 1);
    }

    #[test]
    fn joins_through_an_mi_that_is_not_attached_are_refused() {
        let mut r = Registry::new();
        create(&mut r, "g", 1);
        let out = r.apply(&AppOp::Join {
            req: req(99, 1),
            group: gname("g"),
            member: member("a", 10),
        });
        assert_eq!(out.result, Err(AppError::Disconnected));
        r.apply(&AppOp::MiFailed {
            mis: vec![(Uuid::from_u128(7), 0)],
        });
        assert!(r.mi(&Uuid::from_u128(7)).is_none());
        let out = r.apply(&AppOp::Join {
            req: req(7, 50),
            group: gname("g"),
            member: member("a", 10),
        });
        assert_eq!(out.result, Err(AppError::Disconnected));
    }

    #[test]
    fn a_later_attachment_moves_the_mi_and_an_older_one_does_not() {
        let mut r = Registry::new();
        let a = NodeId::v4(127, 0, 0, 1, 7200);
        let b = NodeId::v4(127, 0, 0, 2, 7200);
        for (seq, at) in [(1, a), (3, b), (2, a)] {
            r.apply(&AppOp::Attach {
                req: req(5, seq),
                host: "h5".into(),
                mserver: at,
            });
        }
        let rec = r.mi(&Uuid::from_u128(5)).expect("attached");
        assert_eq!((rec.mserver, rec.attach_seq), (b, 3));
        let bad = r.apply(&AppOp::Attach {
            req: req(6, 1),
            host: String::new(),
            mserver: a,
        });
        assert!(matches!(bad.result, Err(AppError::InvalidName(_))));
    }

    #[test]
    fn missed_views_come_from_the_history_until_it_runs_out() {
        let mut r = Registry::new();
        create(&mut r, "g", 1);
        for i in 0..(VIEW_HISTORY as u64 + 5) {
            r.apply(&AppOp::Join {
                req: req(1, 100 + i),
                group: gname("g"),
                member: member(&format!("m{i}"), 1000 + u128::from(i)),
            });
        }
        let now = r.view(&gname("g")).expect("group").number;
        let recent = r.views_since(&gname("g"), now - 3).expect("recent");
        assert_eq!(
            recent.iter().map(|v| v.number).collect::<Vec<_>>(),
            vec![now - 2, now - 1, now]
        );
        assert_eq!(r.views_since(&gname("g"), now), Some(Vec::new()));
        assert_eq!(r.views_since(&gname("g"), 0), None);
        assert_eq!(r.views_since(&gname("nope"), 0), None);
    }

    #[test]
    fn a_registry_copy_is_the_same_registry() {
        let mut r = Registry::new();
        create(&mut r, "g", 1);
        r.apply(&AppOp::Join {
            req: req(1, 2),
            group: gname("g"),
            member: member("a", 10),
        });
        let copy = Registry::decode(&r.encode().expect("encodes")).expect("decodes");
        assert_eq!(copy.views(), r.views());
        assert_eq!(copy.mi(&Uuid::from_u128(1)), r.mi(&Uuid::from_u128(1)));
        // The copy remembers the requests too.
        let mut copy = copy;
        let dup = copy.apply(&AppOp::Join {
            req: req(1, 2),
            group: gname("g"),
            member: member("a", 10),
        });
        assert!(dup.duplicate);
        assert!(Registry::decode(&[0xff, 0x00, 0x13]).is_err());
    }

    fn group_with(r: &mut Registry, g: &str, options: GroupOptions, hosts: &[u128]) {
        for mi in [1, 2, 7, 8] {
            if r.mi(&Uuid::from_u128(mi)).is_none() {
                attach(r, mi);
            }
        }
        r.apply(&AppOp::Create {
            req: req(1, 900),
            group: gname(g),
            options,
        });
        for (i, mi) in hosts.iter().enumerate() {
            let n = 500 + i as u128;
            let out = r.apply(&AppOp::Join {
                req: req(*mi, 1000 + i as u64),
                group: gname(g),
                member: member(&format!("m{i}"), n),
            });
            assert!(out.result.is_ok(), "{:?}", out.result);
        }
    }

    fn majority() -> GroupOptions {
        GroupOptions {
            survive: crate::appgroup::SurviveRule::KeepMajority,
            ..GroupOptions::default()
        }
    }

    #[test]
    fn a_minority_part_is_terminated_by_keep_majority() {
        let mut r = Registry::new();
        group_with(&mut r, "g", majority(), &[1, 2, 7]);
        let out = r.apply(&AppOp::MiFailed {
            mis: vec![(Uuid::from_u128(2), 0), (Uuid::from_u128(7), 0)],
        });
        assert_eq!(out.views.len(), 1);
        assert!(out.views[0].is_empty(), "{:?}", out.views[0]);
        assert_eq!(
            out.lost,
            vec![(gname("g"), Uuid::from_u128(500), Uuid::from_u128(1))]
        );
        // The same loss in a keep-all group keeps the rest running.
        let mut r = Registry::new();
        group_with(&mut r, "g", GroupOptions::default(), &[1, 2, 7]);
        let out = r.apply(&AppOp::MiFailed {
            mis: vec![(Uuid::from_u128(2), 0), (Uuid::from_u128(7), 0)],
        });
        assert_eq!(out.views[0].len(), 1);
        assert!(out.lost.is_empty());
    }

    #[test]
    fn an_mi_that_attached_again_is_spared() {
        let mut r = Registry::new();
        group_with(&mut r, "g", GroupOptions::default(), &[1, 2]);
        r.apply(&AppOp::Attach {
            req: req(2, 5),
            host: "h".into(),
            mserver: NodeId::v4(127, 0, 0, 2, 7200),
        });
        // A failure seen for its earlier attachment (seq 0).
        let out = r.apply(&AppOp::MiFailed {
            mis: vec![(Uuid::from_u128(2), 0)],
        });
        assert!(out.views.is_empty());
        assert_eq!(r.view(&gname("g")).map(|v| v.len()), Some(2));
    }

    #[test]
    fn reform_merges_the_parts_above_both_numbers_once() {
        // Side A lost MI 2's member at the partition; side B kept it and
        // went on to view 9.
        let mut a = Registry::new();
        group_with(&mut a, "g", GroupOptions::default(), &[1, 2]);
        a.apply(&AppOp::MiFailed {
            mis: vec![(Uuid::from_u128(2), 0)],
        });
        let before = a.view(&gname("g")).expect("group");
        assert_eq!(before.len(), 1);
        a.apply(&AppOp::Readmit {
            mis: vec![(
                Uuid::from_u128(2),
                MiRecord {
                    mserver: NodeId::v4(127, 0, 0, 2, 7200),
                    host: "h".into(),
                    attach_seq: 0,
                },
            )],
        });
        let op = AppOp::Reform {
            group: gname("g"),
            options: GroupOptions::default(),
            number: 9,
            base: None,
            members: vec![(member("m1", 501), Uuid::from_u128(2))],
        };
        let out = a.apply(&op);
        assert_eq!(out.views.len(), 1);
        assert_eq!(out.views[0].number, 10);
        assert_eq!(out.views[0].len(), 2);
        // Another absorbed mserver submits the same part: nothing changes.
        let again = a.apply(&op);
        assert!(again.views.is_empty() && again.lost.is_empty());
        // A group only the absorbed side knew is taken in as it was.
        let other = a.apply(&AppOp::Reform {
            group: gname("new"),
            options: GroupOptions::default(),
            number: 4,
            base: None,
            members: vec![(member("x", 600), Uuid::from_u128(2))],
        });
        assert_eq!(other.views[0].number, 5);
        assert_eq!(a.view(&gname("new")).map(|v| v.len()), Some(1));
    }

    #[test]
    fn reform_refused_by_the_merge_rule_reports_the_members_lost() {
        let options = GroupOptions {
            merge: crate::appgroup::MergeRule::KeepOldest,
            ..GroupOptions::default()
        };
        let mut a = Registry::new();
        // m0 (the oldest, on MI 1), m1 and m2 on MIs 2 and 7.
        group_with(&mut a, "g", options.clone(), &[1, 2, 7]);
        // This side lost the oldest member's MI ...
        a.apply(&AppOp::MiFailed {
            mis: vec![(Uuid::from_u128(1), 0), (Uuid::from_u128(7), 0)],
        });
        // ... and the other side's part (m2) does not hold it either.
        let out = a.apply(&AppOp::Reform {
            group: gname("g"),
            options,
            number: 7,
            base: None,
            members: vec![(member("m2", 502), Uuid::from_u128(7))],
        });
        assert!(out.views.is_empty());
        assert_eq!(
            out.lost,
            vec![(gname("g"), Uuid::from_u128(502), Uuid::from_u128(7))]
        );
    }

    #[test]
    fn one_commit_makes_one_view_per_group() {
        let mut r = Registry::new();
        create(&mut r, "g", 1);
        let join = |seq: u64, name: &str, id: u128| {
            AppOp::Join {
                req: req(1, seq),
                group: gname("g"),
                member: member(name, id),
            }
            .encode()
            .expect("encodes")
        };
        let out = r.apply_payloads(&[join(2, "a", 10), join(3, "b", 11), join(2, "a", 10)]);
        assert_eq!(out.len(), 3);
        // One view (number 1) with both; both joins answered with it.
        for a in &out[..2] {
            assert_eq!(a.views.len(), 1);
            assert_eq!(a.views[0].number, 1);
            assert_eq!(a.views[0].len(), 2);
            assert!(matches!(&a.result, Ok(AppReply::Joined(v)) if v.number == 1 && v.len() == 2));
        }
        // The duplicate in the same commit is one, with the same answer.
        assert!(out[2].duplicate);
        assert_eq!(out[2].result, out[0].result);
        // And a later duplicate gets the commit's view too.
        let later = r.apply_payload(&join(3, "b", 11));
        assert!(later.duplicate);
        assert!(matches!(&later.result, Ok(AppReply::Joined(v)) if v.number == 1));
        // A join whose MI fails later in the same commit did not happen.
        let failed = AppOp::MiFailed {
            mis: vec![(Uuid::from_u128(1), 0)],
        }
        .encode()
        .expect("encodes");
        let out = r.apply_payloads(&[join(4, "c", 12), failed]);
        assert_eq!(out[0].result, Err(AppError::Disconnected));
        assert!(r
            .view(&gname("g"))
            .is_some_and(|v| !v.contains(Uuid::from_u128(12))));
    }

    #[test]
    fn payloads_round_trip_and_garbage_is_refused() {
        let op = AppOp::Create {
            req: req(1, 1),
            group: gname("g"),
            options: GroupOptions::default(),
        };
        let bytes = op.encode().expect("encodes");
        assert_eq!(AppOp::decode(&bytes), Ok(op));
        let mut r = Registry::new();
        for junk in [&b""[..], &b"\xff\xff\xff"[..], &bytes[..bytes.len() / 2]] {
            let out = r.apply_payload(junk);
            assert!(out.result.is_err());
            assert!(out.views.is_empty());
        }
    }
}
