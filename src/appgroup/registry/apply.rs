//! Applying one core-set commit's ops to the [`Registry`]: the commit
//! as a whole (one new view per group it changes, duplicates answered as
//! their original was), then one handler per op (create, join, leave, MI
//! failure, attachment, and the merge's readmit and reform).

use super::ops::{AppOp, AppReply, Applied, MiRecord, RequestId};
use super::{
    refused, Group, Registry, MAX_GROUPS, MAX_GROUP_MEMBERS, MAX_HOST, MAX_MIS, MAX_REMEMBERED,
};
use crate::appgroup::error::AppError;
use crate::appgroup::names::GroupName;
use crate::appgroup::rules::GroupOptions;
use crate::appgroup::view::{AppMember, AppView};
use crate::id::NodeId;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use uuid::Uuid;

impl Registry {
    /// Applies one commit's ops (each decoded, or refused): see
    /// [`Registry::apply_payloads`].
    pub(super) fn apply_all(&mut self, ops: Vec<Result<AppOp, AppError>>) -> Vec<Applied> {
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
