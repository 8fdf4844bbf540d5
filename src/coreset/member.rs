//! A member's state (seed 003, section IV.C.2: core table, view, fail
//! list) and the dispatch of everything it receives: who sent it (a member
//! of this view, a newer life of one, an older life, a stranger) decides
//! what may happen before the message kind does.

use super::context::{Ctx, HandlerCtx, Transition};
use super::event::{ChangeRole, CoreSetEvent, Member};
use super::msg::{
    Absorbed, CoFail, Commit, Envelope, Joiner, Layer, Msg, Proposal, RemovalReason, NO_VIEW,
};
use super::table::{Row, Table};
use super::tree::{ChildClaim, GroupRef, TreeOp};
use crate::id::{Incarnation, NodeId, ViewId};
use crate::time::{earliest, Instant};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Most queued join requests at the coordinator.
pub(crate) const MAX_JOIN_QUEUE: usize = 256;

/// Most recently withdrawn changes remembered (to answer stale ACKs).
const MAX_ABORTED: usize = 8;

/// An entry of the fail list.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FailEntry {
    /// The failed life (a newer life at the address is not failed).
    pub(crate) incarnation: Incarnation,
    /// When it was put on the list.
    pub(crate) since: Instant,
    /// Failure or leave.
    pub(crate) reason: RemovalReason,
    /// It coordinated a change in progress (priority rule 3).
    pub(crate) coordinator: bool,
}

/// A join request queued at the coordinator.
#[derive(Clone, Debug)]
pub(crate) struct QueuedJoin {
    pub(crate) incarnation: Incarnation,
    pub(crate) since: Instant,
    pub(crate) last_heard: Instant,
    /// Its request said it rejoins after an exclusion while running.
    pub(crate) rejoin: bool,
    /// Not a candidate for automatic re-parenting.
    pub(crate) declined: bool,
    /// Above level 1: the child set it is a parent of.
    pub(crate) child_group: Option<GroupRef>,
}

/// What an `M_JOIN_REQ` says, as its handler takes it.
#[derive(Clone, Debug)]
pub(crate) struct JoinRequest {
    /// Requests the newcomer sent before this one.
    pub(crate) attempt: u32,
    /// It rejoins after an exclusion while running.
    pub(crate) rejoin: bool,
    /// Above level 1: the child set it comes as a parent of.
    pub(crate) child: Option<ChildClaim>,
    /// Not a candidate for automatic re-parenting.
    pub(crate) declined: bool,
}

/// A change this member ACKed and whose COMMIT it waits for.
#[derive(Clone, Debug)]
pub(crate) struct Lock {
    pub(crate) proposal: Proposal,
    pub(crate) takeover: bool,
    /// Who drives it now (the originator, or a member that took over).
    pub(crate) driver: NodeId,
    pub(crate) driver_rank: u64,
    /// When the first AGREE for it came.
    pub(crate) since: Instant,
    pub(crate) commit_deadline: Instant,
    pub(crate) nudge_at: Instant,
    pub(crate) election: Option<Election>,
}

/// A coordinator-failure election (CO_FAIL status exchange).
#[derive(Clone, Debug)]
pub(crate) struct Election {
    /// The suspected coordinator's rank.
    pub(crate) suspect: u64,
    /// Statuses heard, by rank (ours included).
    pub(crate) statuses: BTreeMap<u64, super::msg::CoStatus>,
    pub(crate) deadline: Instant,
    /// Status multicasts sent.
    pub(crate) sends: u32,
}

/// One member whose ACK a coordinator waits for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Acker {
    pub(crate) addr: NodeId,
    pub(crate) acked: bool,
    /// AGREEs sent since it last answered.
    pub(crate) sends: u32,
    /// Refusing (BUSY) since.
    pub(crate) refusing_since: Option<Instant>,
    /// Taken as failed (no answer, or confirmed unreachable).
    pub(crate) dead: bool,
}

/// A change this member coordinates.
#[derive(Clone, Debug)]
pub(crate) struct Drive {
    pub(crate) proposal: Proposal,
    pub(crate) takeover: bool,
    pub(crate) started: Instant,
    pub(crate) expected: BTreeMap<u64, Acker>,
    pub(crate) next_retx: Instant,
    /// Phase I is over; the COMMIT goes at this time (`commit_delay`).
    pub(crate) delay_until: Option<Instant>,
}

/// Ring monitoring state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Monitor {
    /// The clockwise neighbour (rank, address) this member monitors.
    pub(crate) target: Option<(u64, NodeId)>,
    /// The counter-clockwise neighbour, which monitors this member.
    pub(crate) heartbeat_to: Option<NodeId>,
    pub(crate) last_heard: Instant,
    /// QUERYs sent since the target was last heard.
    pub(crate) queries: u32,
    pub(crate) next_check: Instant,
    pub(crate) next_heartbeat: Instant,
}

/// A member reported unreachable, being confirmed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe {
    pub(crate) addr: NodeId,
    pub(crate) deadline: Instant,
    /// When the QUERY is sent again before the deadline: a member that
    /// was dying when the first one arrived (its socket still open, its
    /// process gone) answers the second with "port unreachable".
    pub(crate) resend_at: Instant,
    /// A sweep probe (no hint yet): silence ends it without accusing;
    /// proposals wait for it.
    pub(crate) soft: bool,
}

/// A younger subgroup's offer to merge into ours (kept by our lowest rank).
#[derive(Clone, Debug)]
pub(crate) struct MergeOfferEntry {
    pub(crate) absorbed: super::msg::Absorbed,
    pub(crate) heard: Instant,
}

/// The state of a member of a view.
pub(crate) struct Joined {
    pub(crate) table: Table,
    /// The latest commit: the view and the application commits since.
    pub(crate) view: ViewId,
    /// The membership change that installed the current view (`view`
    /// with commit 0, and the coordinator of that change).
    pub(crate) installed: ViewId,
    pub(crate) my_rank: u64,
    /// The base and COMMIT that installed the current view (re-sent to a
    /// member or newcomer that missed it).
    pub(crate) last_commit: (ViewId, Commit),
    pub(crate) fail_list: BTreeMap<u64, FailEntry>,
    pub(crate) join_queue: BTreeMap<NodeId, QueuedJoin>,
    pub(crate) lock: Option<Lock>,
    pub(crate) drive: Option<Drive>,
    /// The change this member originated at this base (it originates at
    /// most one per base, and re-proposes it unchanged after an abort).
    pub(crate) originated: Option<(Proposal, Instant)>,
    pub(crate) retry_after: Instant,
    pub(crate) aborted: VecDeque<ViewId>,
    /// Ranks seen coordinating a change at this base (priority rule 3).
    pub(crate) seen_drivers: BTreeSet<u64>,
    pub(crate) monitor: Monitor,
    pub(crate) probes: BTreeMap<u64, Probe>,
    /// Members confirmed failed by unreachable hints in this view.
    pub(crate) dead: BTreeSet<u64>,
    pub(crate) announce_next: Instant,
    /// Offers from younger subgroups, by their lowest rank's address.
    pub(crate) merge_offers: BTreeMap<NodeId, MergeOfferEntry>,
    /// We offered our subgroup to an older one: we lead no merge before.
    pub(crate) merge_hold_until: Instant,
    /// We collect merge offers until then before proposing (cleared by
    /// the timer when it passes).
    pub(crate) merge_collect_until: Option<Instant>,
    /// The subgroup we last offered ours to (its lowest rank's age key and
    /// address): until `merge_hold_until` we offer to no other unless it
    /// is older still, so that one leader, not several, absorbs us.
    pub(crate) offered_to: Option<(Incarnation, NodeId)>,
    /// After a merge we took part in: until when, and the members of our
    /// own subgroup before it. A member of another side that is still
    /// behind (its COMMIT is on its way from its own leader) is not failed
    /// for answering NOT_MEMBER meanwhile.
    pub(crate) merge_grace: Option<(Instant, BTreeSet<NodeId>)>,
    /// A member is in a view past ours: the view, and when we take it as
    /// proof that we were failed ([`Joined::on_member_ahead`]).
    pub(crate) ahead: Option<(ViewId, Instant)>,
    /// Flap history per address (`flap.rs`).
    pub(crate) flaps: super::holddown::FlapRecords,
    /// Addresses we failed because they stayed silent, and when.
    pub(crate) silenced: BTreeMap<NodeId, Instant>,
    /// When this life last saw members of its view fall silent or fail
    /// (a QUERY to its overdue neighbour unanswered, a member put on its
    /// fail list, a view installed that failed one): if it is excluded
    /// soon after, it was cut off from the group itself (a symmetric
    /// partition), not the one side of a one-way link (`flap.rs`).
    pub(crate) failures_seen: Option<Instant>,
    /// When we last heard our lowest rank's ANNOUNCE of our view (or
    /// installed the view): a member that stopped hearing it before it
    /// learned it was excluded was cut off from the group too.
    pub(crate) announce_heard: Instant,
    /// Readmitted members we had failed for silence, watched (by rank)
    /// until the time given.
    pub(crate) suspects: BTreeMap<u64, Instant>,
    /// The next round of the watch on `suspects`.
    pub(crate) suspect_next: Instant,
    /// Application change payloads submitted here and not yet proposed,
    /// with when each was submitted.
    pub(crate) app_queue: VecDeque<(Vec<u8>, Instant)>,
    /// Tree changes submitted here and not yet committed, with when each
    /// was submitted (proposed one at a time, in order).
    pub(crate) tree_queue: VecDeque<(TreeOp, Instant)>,
}

/// Who sent a datagram, relative to our table.
enum Sender {
    /// A member of our view (this life).
    Member(Row),
    /// Not a member (or a newer life at a member's address).
    Stranger,
}

impl Joined {
    fn empty(now: Instant, table: Table, view: ViewId, base: ViewId, commit: Commit) -> Self {
        Joined {
            installed: view,
            table,
            view,
            my_rank: 0,
            last_commit: (base, commit),
            fail_list: BTreeMap::new(),
            join_queue: BTreeMap::new(),
            lock: None,
            drive: None,
            originated: None,
            retry_after: Instant::ZERO,
            aborted: VecDeque::new(),
            seen_drivers: BTreeSet::new(),
            monitor: Monitor {
                target: None,
                heartbeat_to: None,
                last_heard: now,
                queries: 0,
                next_check: Instant::MAX,
                next_heartbeat: Instant::MAX,
            },
            probes: BTreeMap::new(),
            dead: BTreeSet::new(),
            announce_next: now,
            merge_offers: BTreeMap::new(),
            merge_hold_until: Instant::ZERO,
            merge_collect_until: None,
            offered_to: None,
            merge_grace: None,
            ahead: None,
            flaps: super::holddown::FlapRecords::default(),
            silenced: BTreeMap::new(),
            failures_seen: None,
            announce_heard: now,
            suspects: BTreeMap::new(),
            suspect_next: Instant::MAX,
            app_queue: VecDeque::new(),
            tree_queue: VecDeque::new(),
        }
    }

    /// Founds a group alone: rank 0, view 1, at the level its claim
    /// implies (level 1 without one).
    pub(crate) fn found(h: &mut HandlerCtx<'_>, since: Instant) -> Box<Joined> {
        let table = Table::founding_with(h.cx.me, h.cx.incarnation, h.cx.tree.founding_record());
        let view = ViewId {
            number: 1,
            seq: 0,
            coordinator: h.cx.incarnation,
        };
        let proposal = Proposal {
            view,
            originator: 0,
            layer: Layer::Physical,
            coordinator_failure: false,
            removals: Vec::new(),
            joins: vec![Joiner {
                rejoin: false,
                addr: h.cx.me,
                incarnation: h.cx.incarnation,
                declined: h.cx.tree.declined,
                child_group: h.cx.tree.child.as_ref().map(|c| c.group.clone()),
            }],
            merges: Vec::new(),
            app: Vec::new(),
            tree: Vec::new(),
        };
        let commit = Commit {
            proposal,
            table: table.clone(),
        };
        h.io.stats.founded += 1;
        Self::admitted(h, NO_VIEW, commit, since)
    }

    /// Installs our first view (founded, or from a COMMIT that lists us).
    pub(crate) fn admitted(
        h: &mut HandlerCtx<'_>,
        base: ViewId,
        commit: Commit,
        since: Instant,
    ) -> Box<Joined> {
        let table = commit.table.clone();
        let view = commit.proposal.view;
        let mut j = Box::new(Joined::empty(h.now, table, view, base, commit));
        j.my_rank = j.table.by_addr(h.cx.me).map(|r| r.rank).unwrap_or(u64::MAX);
        let mut joined: Vec<Member> = j
            .last_commit
            .1
            .proposal
            .joins
            .iter()
            .filter_map(|x| j.table.by_addr(x.addr).map(Member::from))
            .collect();
        if !joined.iter().any(|m| m.addr == h.cx.me) {
            if let Some(r) = j.table.by_addr(h.cx.me) {
                joined.push(Member::from(r));
            }
        }
        joined.sort();
        j.emit_installed(h, joined, Vec::new(), Vec::new(), since, false);
        j.resume_idle(h.now, h.cx);
        j
    }

    fn emit_installed(
        &self,
        h: &mut HandlerCtx<'_>,
        joined: Vec<Member>,
        failed: Vec<Member>,
        left: Vec<Member>,
        change_started: Instant,
        merged: bool,
    ) {
        h.io.stats.views_installed += 1;
        let me = self
            .table
            .by_addr(h.cx.me)
            .map(Member::from)
            .unwrap_or(Member {
                rank: u64::MAX,
                addr: h.cx.me,
                incarnation: h.cx.incarnation,
            });
        h.io.event(CoreSetEvent::ViewInstalled {
            view: self.view,
            members: self.table.rows.iter().map(Member::from).collect(),
            joined,
            failed,
            left,
            change_started,
            me,
            next_rank: self.table.next_rank,
            merged,
        });
    }

    /// Installs the view `commit` (based on our current view `base`).
    pub(crate) fn install(
        &mut self,
        h: &mut HandlerCtx<'_>,
        commit: Commit,
        change_started: Instant,
    ) {
        let base = self.view;
        let old = std::mem::replace(&mut self.table, commit.table.clone());
        let proposal = commit.proposal.clone();
        let p = &commit.proposal;
        let joined: Vec<Member> = if p.is_merge() {
            // From every side's point of view, the other sides joined.
            self.table
                .rows
                .iter()
                .filter(|r| old.by_addr(r.addr).is_none())
                .map(Member::from)
                .collect()
        } else {
            p.joins
                .iter()
                .filter_map(|x| self.table.by_addr(x.addr).map(Member::from))
                .collect()
        };
        let merged = p.is_merge();
        let mut failed = Vec::new();
        let mut left = Vec::new();
        for x in &p.removals {
            if let Some(r) = old.by_rank(x.rank) {
                match x.reason {
                    RemovalReason::Failed => {
                        if r.addr != h.cx.me {
                            self.failures_seen = Some(h.now);
                        }
                        failed.push(Member::from(r))
                    }
                    RemovalReason::Elsewhere => failed.push(Member::from(r)),
                    RemovalReason::Left => left.push(Member::from(r)),
                }
            }
        }
        self.view = p.view;
        self.last_commit = (base, commit);
        self.lock = None;
        self.drive = None;
        self.drop_originated(Some(proposal.view));
        self.retry_after = Instant::ZERO;
        self.aborted.clear();
        self.seen_drivers.clear();
        self.merge_offers.clear();
        self.ahead = None;
        self.announce_heard = h.now;
        let table = &self.table;
        self.fail_list.retain(|rank, e| {
            table
                .by_rank(*rank)
                .is_some_and(|r| r.incarnation == e.incarnation)
        });
        self.join_queue.retain(|addr, q| {
            table
                .by_addr(*addr)
                .map_or(true, |r| r.incarnation != q.incarnation)
        });
        self.probes.retain(|rank, _| table.by_rank(*rank).is_some());
        self.dead.retain(|rank| table.by_rank(*rank).is_some());
        match self.table.by_addr(h.cx.me) {
            Some(r) => self.my_rank = r.rank,
            None => {
                // Only our own leave commits a view without us.
                h.io.transition(Transition::Leave);
                return;
            }
        }
        self.after_view_flaps(h.now, h.cx, &proposal, &old);
        self.merge_grace = merged.then(|| {
            (
                h.now + h.cx.t.commit_timeout,
                old.rows.iter().map(|r| r.addr).collect(),
            )
        });
        if proposal.layer != Layer::Application {
            // A change of the membership or of the tree is a new view; an
            // application change is a commit within this one.
            self.installed = proposal.view;
            self.emit_installed(h, joined, failed, left, change_started, merged);
        } else {
            h.io.stats.app_commits += 1;
        }
        for op in proposal.tree {
            h.io.stats.tree_commits += 1;
            h.io.event(CoreSetEvent::TreeCommitted {
                view: proposal.view,
                originator: old.by_rank(proposal.originator).map(Member::from),
                op,
            });
        }
        if !proposal.app.is_empty() {
            h.io.event(CoreSetEvent::AppCommitted {
                view: proposal.view,
                originator: old.by_rank(proposal.originator).map(Member::from),
                payloads: proposal.app,
            });
        }
        self.resume_idle(h.now, h.cx);
        self.maybe_propose(h);
    }

    /// Forgets the change this member originated; unless it is the one
    /// that just committed (`committed`), its application payloads and its
    /// tree change go back to the front of their queues (another change
    /// took its place; a tree change is checked again at the new base).
    pub(crate) fn drop_originated(&mut self, committed: Option<ViewId>) {
        if let Some((p, since)) = self.originated.take() {
            if Some(p.view) == committed {
                // It committed: its tree change left the queue for good.
                if !p.tree.is_empty() {
                    self.tree_queue.pop_front();
                }
            } else if !p.app.is_empty() {
                self.requeue_app(p.app, since);
            }
        }
    }

    /// Whether a change is in progress here.
    pub(crate) fn busy(&self) -> bool {
        self.lock.is_some() || self.drive.is_some()
    }

    /// The change this member holds (ACKed, or coordinates).
    pub(crate) fn held(&self) -> Option<&Proposal> {
        match (&self.drive, &self.lock) {
            (Some(d), _) => Some(&d.proposal),
            (None, Some(l)) => Some(&l.proposal),
            (None, None) => None,
        }
    }

    /// When the held change started here.
    pub(crate) fn held_since(&self, now: Instant) -> Instant {
        match (&self.drive, &self.lock) {
            (Some(d), _) => d.started,
            (None, Some(l)) => l.since,
            (None, None) => now,
        }
    }

    /// Whether this member coordinates joins: the lowest rank not
    /// suspected.
    pub(crate) fn is_join_coordinator(&self) -> bool {
        self.table
            .rows
            .iter()
            .find(|r| !self.fail_list.contains_key(&r.rank) && !self.dead.contains(&r.rank))
            .is_some_and(|r| r.rank == self.my_rank)
    }

    /// Whether this member stopped hearing the group before it was
    /// excluded (at `now`): members of its view fell silent or failed
    /// lately, or the lowest rank's ANNOUNCE is overdue. It was cut off
    /// as much as the group was from it (a symmetric partition, healed or
    /// flapping), not the unheard side of a one-way link: its rejoin is no
    /// flap (`flap.rs`).
    pub(crate) fn was_cut_off(&self, now: Instant, cx: &Ctx) -> bool {
        let failures = self
            .failures_seen
            .is_some_and(|t| now.saturating_duration_since(t) <= cx.t.cut_memory);
        let announces = !self.is_lowest()
            && now.saturating_duration_since(self.announce_heard)
                > cx.t.announce_interval + cx.t.reply_timeout;
        failures || announces
    }

    /// Whether this member is the lowest rank of the view.
    pub(crate) fn is_lowest(&self) -> bool {
        self.table.lowest().is_some_and(|r| r.rank == self.my_rank)
    }

    /// Puts `rank` on the fail list (if it is a member and not us).
    pub(crate) fn add_fail(&mut self, now: Instant, rank: u64, reason: RemovalReason) -> bool {
        if rank == self.my_rank || self.fail_list.contains_key(&rank) {
            return false;
        }
        let Some(r) = self.table.by_rank(rank) else {
            return false;
        };
        if reason == RemovalReason::Failed {
            self.failures_seen = Some(now);
        }
        self.fail_list.insert(
            rank,
            FailEntry {
                incarnation: r.incarnation,
                since: now,
                reason,
                coordinator: false,
            },
        );
        true
    }

    /// Remembers a change we withdrew.
    pub(crate) fn remember_aborted(&mut self, id: ViewId) {
        if self.aborted.len() >= MAX_ABORTED {
            self.aborted.pop_front();
        }
        self.aborted.push_back(id);
    }

    /// The earliest deadline of every timer that runs in this state.
    pub(crate) fn next_deadline(&self, cx: &Ctx) -> Option<Instant> {
        let mut d = None;
        if let Some(dr) = &self.drive {
            d = earliest(d, Some(dr.delay_until.unwrap_or(dr.next_retx)));
        }
        if let Some(l) = &self.lock {
            match &l.election {
                Some(e) => d = earliest(d, Some(e.deadline)),
                None => {
                    d = earliest(d, Some(l.commit_deadline));
                    d = earliest(d, Some(l.nudge_at));
                }
            }
        }
        for p in self.probes.values() {
            d = earliest(d, Some(p.deadline.min(p.resend_at)));
        }
        if let Some((_, t)) = self.ahead {
            d = earliest(d, Some(t));
        }
        if !self.busy() {
            if self.monitor.heartbeat_to.is_some() {
                d = earliest(d, Some(self.monitor.next_heartbeat));
            }
            if self.monitor.target.is_some() {
                d = earliest(d, Some(self.monitor.next_check));
            }
            if self.is_lowest() {
                d = earliest(d, Some(self.announce_next));
            }
            if !self.suspects.is_empty() {
                d = earliest(d, Some(self.suspect_next));
            }
            d = earliest(d, self.merge_collect_until);
            if self.retry_after > Instant::ZERO && self.wants_to_propose() {
                d = earliest(d, Some(self.retry_after));
            }
            if !self.join_queue.is_empty() {
                let ttl = cx.t.join_ttl;
                let oldest = self.join_queue.values().map(|q| q.last_heard + ttl).min();
                d = earliest(d, oldest);
            }
        }
        d
    }

    /// Whether this member has something to propose once allowed.
    fn wants_to_propose(&self) -> bool {
        self.originated.is_some()
            || !self.fail_list.is_empty()
            || (!self.join_queue.is_empty() && self.is_join_coordinator())
    }

    /// The member to watch (our clockwise neighbour).
    pub(crate) fn watch_target(&self) -> Option<NodeId> {
        self.monitor.target.map(|(_, a)| a)
    }

    /// This member's part in the change in progress.
    pub(crate) fn role(&self) -> Option<ChangeRole> {
        if let Some(d) = &self.drive {
            return Some(ChangeRole::Coordinator {
                proposal: d.proposal.view,
                takeover: d.takeover,
                delaying: d.delay_until.is_some(),
                acked: d.expected.values().filter(|a| a.acked).count(),
                expected: d.expected.len(),
                join: d.proposal.is_join(),
            });
        }
        self.lock.as_ref().map(|l| ChangeRole::Participant {
            proposal: l.proposal.view,
            coordinator: l.driver,
            electing: l.election.is_some(),
        })
    }

    // ----- inputs -------------------------------------------------------

    /// A datagram for our group.
    pub(crate) fn on_packet(
        &mut self,
        h: &mut HandlerCtx<'_>,
        source: NodeId,
        incarnation: Incarnation,
        env: Envelope,
    ) {
        let Envelope { view, msg, .. } = env;
        let row = self.table.by_addr(source).copied();
        // NOT_MEMBER counts from any life at a member's address: a
        // restarted neighbour may be the one telling us.
        if let (Msg::NotMember, Some(r)) = (&msg, row) {
            if incarnation >= r.incarnation {
                self.on_not_member(h, r, incarnation, view);
                return;
            }
        }
        let sender = match row {
            Some(r) if r.incarnation == incarnation => Sender::Member(r),
            Some(r) if incarnation > r.incarnation => {
                self.restart_hint(h, r);
                Sender::Stranger
            }
            Some(_) => {
                h.io.stats.drops.stale_incarnation += 1;
                return;
            }
            None => Sender::Stranger,
        };
        match sender {
            Sender::Stranger => self.on_stranger(h, source, incarnation, view, msg),
            Sender::Member(r) => {
                // A merge that absorbs our subgroup, re-sent by a member
                // of ours that installed it: whatever its envelope's view.
                if let Msg::Commit(c) = &msg {
                    if c.proposal.absorbs(self.view).is_some() {
                        self.on_foreign_commit(h, c.clone());
                        return;
                    }
                }
                // Alive: whatever it sends answers a pending probe.
                let swept = self.probes.remove(&r.rank).is_some_and(|p| p.soft);
                // A member already in the view our held change installs:
                // that change committed, and its COMMIT was lost to us.
                if let Some(p) = self.held() {
                    if p.view == view && !matches!(msg, Msg::MJoinReq { .. }) {
                        h.io.stats.inferred_commits += 1;
                        self.commit_held(h);
                        if h.io.transition.is_some() {
                            return;
                        }
                        return self.on_packet(
                            h,
                            source,
                            incarnation,
                            Envelope {
                                group: String::new(),
                                view,
                                msg,
                                life: None,
                            },
                        );
                    }
                }
                // A member already past our view, and not by the change we
                // hold: we missed a view, so we are not in the group's any
                // more (a change committed without our ACK puts us on its
                // fail list). Rejoin now rather than wait to be removed.
                if view.position() > self.view.position() && !matches!(msg, Msg::MJoinReq { .. }) {
                    h.io.stats.drops.future_view += 1;
                    self.on_member_ahead(h.now, h.cx, view);
                    return;
                }
                self.on_member(h, r, view, msg);
                if swept {
                    self.maybe_propose(h);
                }
            }
        }
    }

    /// Installs the held change from our own computation.
    pub(crate) fn commit_held(&mut self, h: &mut HandlerCtx<'_>) {
        let Some(p) = self.held().cloned() else {
            return;
        };
        let since = self.held_since(h.now);
        let table = self.table.apply(&p);
        self.install(h, Commit { proposal: p, table }, since);
    }

    fn on_stranger(
        &mut self,
        h: &mut HandlerCtx<'_>,
        source: NodeId,
        incarnation: Incarnation,
        view: ViewId,
        msg: Msg,
    ) {
        match msg {
            Msg::MJoinReq {
                attempt,
                rejoin,
                child,
                declined,
            } => self.on_join_req(
                h,
                source,
                incarnation,
                JoinRequest {
                    attempt,
                    rejoin,
                    child,
                    declined,
                },
            ),
            Msg::Announce { .. } => self.on_foreign_announce(h, source, incarnation),
            Msg::MergeOffer {
                next_rank,
                members,
                bits,
                level,
                parent_group,
            } => self.on_merge_offer(
                h,
                source,
                incarnation,
                level,
                Absorbed {
                    view,
                    next_rank,
                    members,
                    bits,
                    parent_group,
                },
            ),
            Msg::Commit(c) => self.on_foreign_commit(h, c),
            Msg::Query
            | Msg::Reply { .. }
            | Msg::AgreeJ { .. }
            | Msg::AgreeL { .. }
            | Msg::AgreeAck { .. }
            | Msg::CoFail { reply: false, .. } => {
                h.io.stats.drops.non_member += 1;
                self.send_not_member(h, source);
            }
            _ => h.io.stats.drops.non_member += 1,
        }
    }

    fn on_member(&mut self, h: &mut HandlerCtx<'_>, r: Row, view: ViewId, msg: Msg) {
        match msg {
            Msg::MJoinReq {
                attempt,
                rejoin,
                child,
                declined,
            } => self.on_join_req(
                h,
                r.addr,
                r.incarnation,
                JoinRequest {
                    attempt,
                    rejoin,
                    child,
                    declined,
                },
            ),
            Msg::JoinWait { .. } | Msg::JoinRefused { .. } => h.io.stats.drops.unexpected += 1,
            Msg::AgreeJ { proposal, takeover } => {
                if proposal.is_join() {
                    self.on_agree(h, r, view, proposal, takeover);
                } else {
                    h.io.stats.drops.malformed += 1;
                }
            }
            Msg::AgreeL { proposal, takeover } => {
                if proposal.is_join() || proposal.is_merge() {
                    h.io.stats.drops.malformed += 1;
                } else {
                    self.on_agree(h, r, view, proposal, takeover);
                }
            }
            Msg::AgreeM { proposal, takeover } => {
                if proposal.is_merge() {
                    self.on_agree(h, r, view, proposal, takeover);
                } else {
                    h.io.stats.drops.malformed += 1;
                }
            }
            // Offers come from the lowest rank of another subgroup, never
            // from a member of ours.
            Msg::MergeOffer { .. } => h.io.stats.drops.unexpected += 1,
            Msg::AgreeAck { proposal } => self.on_ack(h, r, proposal),
            Msg::Busy {
                refused,
                locked: _,
                key,
            } => self.on_busy(h, r, refused, key),
            Msg::Abort { proposal } => self.on_abort(h, proposal),
            Msg::Commit(c) => self.on_commit(h, view, c),
            Msg::CoFail {
                proposal,
                suspect,
                status,
                reply,
            } => {
                let co_fail = CoFail {
                    proposal,
                    suspect,
                    status,
                    reply,
                };
                self.on_co_fail(h, r, view, co_fail)
            }
            Msg::Query => self.on_query(h, r),
            Msg::Reply { .. } => self.on_reply(h.now, h.cx, r),
            Msg::NotMember => self.on_not_member(h, r, r.incarnation, view),
            Msg::Announce { .. } => self.on_member_announce(h, r, view),
        }
    }

    /// A newer life at the address of member `r`: the old life is dead.
    /// Wherever we wait for the old life (phase I, a COMMIT, an election)
    /// we stop waiting at once; the coordinator of joins and `r`'s monitor
    /// also put it on the fail list (the others leave that to them, so that
    /// one change, not one per member, removes it).
    fn restart_hint(&mut self, h: &mut HandlerCtx<'_>, r: Row) {
        let monitor_of_r = self
            .table
            .by_rank(r.ccw)
            .is_some_and(|m| m.rank == self.my_rank);
        let waited_for = self
            .drive
            .as_ref()
            .is_some_and(|d| d.expected.get(&r.rank).is_some_and(|a| !a.acked && !a.dead))
            || self.lock.as_ref().is_some_and(|l| l.driver_rank == r.rank);
        if self.is_join_coordinator() || monitor_of_r || waited_for {
            if !self.fail_list.contains_key(&r.rank) {
                h.io.stats.restarts_detected += 1;
            }
            self.confirm(h, r.rank);
        }
    }

    /// A member is already in view `view`, past ours, and not by the
    /// change we hold. Either we were failed (a change committed without
    /// our ACK), or a merge absorbed our subgroup and its COMMIT is still
    /// on its way (the members that got it first talk to us at once): the
    /// COMMIT gets a quarter of a reply timeout before we rejoin.
    pub(crate) fn on_member_ahead(&mut self, now: Instant, cx: &Ctx, view: ViewId) {
        if self.ahead.is_none() {
            self.ahead = Some((view, now + cx.t.reply_timeout / 4));
        }
    }

    /// The grace of [`Joined::on_member_ahead`] is over: we were failed.
    pub(crate) fn ahead_timer(&mut self, h: &mut HandlerCtx<'_>) {
        if let Some((view, deadline)) = self.ahead {
            if h.now >= deadline {
                self.ahead = None;
                self.on_newer_view(h, view);
            }
        }
    }

    /// We are not in the group's view `view`, or it moved past us.
    pub(crate) fn on_newer_view(&mut self, h: &mut HandlerCtx<'_>, view: ViewId) {
        if self.held().is_some_and(|p| p.view == view) {
            h.io.stats.inferred_commits += 1;
            self.commit_held(h);
            return;
        }
        if h.leave.is_some() {
            h.io.transition(Transition::Leave);
        } else {
            h.io.transition(Transition::Exclude);
        }
    }
}
