//! The change protocols (seed 003, sections III.A-C and IV.C.3-4; figures
//! 5, 21, 25, 27, 28): proposing (batched AGREE_L, AGREE_J), phase I with
//! retries and non-responders, refusals and withdrawals between virtually
//! simultaneous changes, and phase II. The coordinator-failure election
//! is `election.rs`; the join requests a coordinator queues, `admit.rs`.

use super::context::{Ctx, HandlerCtx, Transition};
use super::event::CoreSetEvent;
use super::member::{Acker, Drive, Joined, Lock, QueuedJoin};
use super::msg::{
    Commit, Joiner, Layer, Msg, MsgKind, PriorityKey, Proposal, Removal, RemovalReason,
    MAX_APP_BATCH, MAX_APP_BATCH_BYTES, MAX_JOIN_BATCH,
};
use super::table::MAX_MEMBERS;
use crate::id::{Incarnation, NodeId, ViewId};
use crate::time::{earliest, Instant};
use std::collections::{BTreeMap, BTreeSet};

impl Joined {
    // ----- proposing ----------------------------------------------------

    /// Starts the next change if this member is idle and has one: its
    /// withdrawn change again (unchanged), else its whole fail list (and
    /// its own leave) in one AGREE_L, else, as coordinator of joins, the
    /// queued newcomers in one AGREE_J.
    pub(crate) fn maybe_propose(&mut self, h: &mut HandlerCtx<'_>) {
        if self.busy() || h.now < self.retry_after {
            return;
        }
        // The back-off (if any) is over; it arms no timer any more.
        self.retry_after = Instant::ZERO;
        if h.io.transition.is_some() || self.probes.values().any(|p| p.soft) {
            return;
        }
        let table = &self.table;
        self.fail_list.retain(|rank, e| {
            table
                .by_rank(*rank)
                .is_some_and(|r| r.incarnation == e.incarnation)
        });
        if let Some((p, since)) = self.originated.clone() {
            if p.validate(self.view, &self.table).is_ok() {
                self.start_drive(h, p, false, since, &BTreeSet::new());
                return;
            }
            self.originated = None;
            self.requeue_app(p.app, since);
        }
        let mut removals: Vec<Removal> = self
            .fail_list
            .iter()
            .map(|(rank, e)| Removal {
                rank: *rank,
                reason: e.reason,
            })
            .collect();
        let mut started = self.fail_list.values().map(|e| e.since).min();
        if let Some(l) = h.leave {
            if !removals.iter().any(|x| x.rank == self.my_rank) {
                removals.push(Removal {
                    rank: self.my_rank,
                    reason: RemovalReason::Left,
                });
                started = earliest(started, Some(l.since));
            }
        }
        removals.sort_by_key(|x| x.rank);
        if !removals.is_empty() {
            if removals.len() >= self.table.len() {
                // We leave and every other member failed: nobody to tell.
                if h.leave.is_some() {
                    h.io.transition(Transition::Leave);
                }
                return;
            }
            let coordinator_failure = removals.iter().any(|x| {
                self.seen_drivers.contains(&x.rank)
                    || self.fail_list.get(&x.rank).is_some_and(|e| e.coordinator)
            });
            let p = Proposal {
                view: self.next_view(h.cx.incarnation),
                originator: self.my_rank,
                layer: Layer::Physical,
                coordinator_failure,
                removals,
                joins: Vec::new(),
                merges: Vec::new(),
                app: Vec::new(),
                tree: Vec::new(),
            };
            self.start_drive(h, p, false, started.unwrap_or(h.now), &BTreeSet::new());
            return;
        }
        if self.is_join_coordinator() {
            if self.propose_join(h) {
                return;
            }
            if let Some(p) = self.merge_proposal(h.now, h.cx) {
                self.start_drive(h, p, false, h.now, &BTreeSet::new());
                return;
            }
        }
        // Then tree changes, then application changes (priority rule 2):
        // any member that has some queued proposes them.
        if let Some((p, since)) = self.tree_proposal(h) {
            self.start_drive(h, p, false, since, &BTreeSet::new());
            return;
        }
        if let Some((p, since)) = self.app_proposal(h.cx) {
            self.start_drive(h, p, false, since, &BTreeSet::new());
        }
    }

    /// An application change of the queued payloads (as many as one
    /// change carries), if any.
    fn app_proposal(&mut self, cx: &Ctx) -> Option<(Proposal, Instant)> {
        let since = self.app_queue.front().map(|(_, t)| *t)?;
        let mut app = Vec::new();
        let mut bytes = 0usize;
        while let Some((payload, _)) = self.app_queue.front() {
            if app.len() >= MAX_APP_BATCH || bytes + payload.len() > MAX_APP_BATCH_BYTES {
                break;
            }
            bytes += payload.len();
            if let Some((payload, _)) = self.app_queue.pop_front() {
                app.push(payload);
            }
        }
        let p = Proposal {
            view: self.view.next_commit(cx.incarnation),
            originator: self.my_rank,
            layer: Layer::Application,
            coordinator_failure: false,
            removals: Vec::new(),
            joins: Vec::new(),
            merges: Vec::new(),
            app,
            tree: Vec::new(),
        };
        Some((p, since))
    }

    /// A tree change of the first queued op, checked at the current base:
    /// an op that no longer fits (a race made it invalid) leaves the queue
    /// with [`CoreSetEvent::TreeRefused`]. The op stays at the front of the
    /// queue until its change commits ([`Joined::drop_originated`]), so a
    /// withdrawn change is proposed again at the next base.
    fn tree_proposal(&mut self, h: &mut HandlerCtx<'_>) -> Option<(Proposal, Instant)> {
        let ranks: Vec<u64> = self.table.rows.iter().map(|r| r.rank).collect();
        while let Some((op, since)) = self.tree_queue.front().cloned() {
            if let Err(error) = self.table.tree.check(&op, self.my_rank, &ranks) {
                self.tree_queue.pop_front();
                h.io.event(CoreSetEvent::TreeRefused { op, error });
                continue;
            }
            let p = Proposal {
                view: self.next_view(h.cx.incarnation),
                originator: self.my_rank,
                layer: Layer::Tree,
                coordinator_failure: false,
                removals: Vec::new(),
                joins: Vec::new(),
                merges: Vec::new(),
                app: Vec::new(),
                tree: vec![op],
            };
            return Some((p, since));
        }
        None
    }

    /// Application payloads of a change of ours that will not commit go
    /// back to the front of the queue, in order.
    pub(crate) fn requeue_app(&mut self, app: Vec<Vec<u8>>, since: Instant) {
        for payload in app.into_iter().rev() {
            self.app_queue.push_front((payload, since));
        }
    }

    /// As coordinator of joins: proposes the queued join requests, if any
    /// (whether it did).
    fn propose_join(&mut self, h: &mut HandlerCtx<'_>) -> bool {
        let ttl = h.cx.t.join_ttl;
        self.join_queue.retain(|_, q| q.last_heard + ttl > h.now);
        let room = MAX_MEMBERS
            .saturating_sub(self.table.len())
            .min(MAX_JOIN_BATCH);
        let table = &self.table;
        let picked: Vec<(NodeId, QueuedJoin)> = self
            .join_queue
            .iter()
            .filter(|(a, _)| table.by_addr(**a).is_none())
            .take(room)
            .map(|(a, q)| (*a, q.clone()))
            .collect();
        if picked.is_empty() {
            return false;
        }
        let started = picked.iter().map(|(_, q)| q.since).min().unwrap_or(h.now);
        let p = Proposal {
            view: self.next_view(h.cx.incarnation),
            originator: self.my_rank,
            layer: Layer::Physical,
            coordinator_failure: false,
            removals: Vec::new(),
            joins: picked
                .iter()
                .map(|(addr, q)| Joiner {
                    addr: *addr,
                    incarnation: q.incarnation,
                    rejoin: q.rejoin,
                    declined: q.declined,
                    child_group: q.child_group.clone(),
                })
                .collect(),
            merges: Vec::new(),
            app: Vec::new(),
            tree: Vec::new(),
        };
        self.start_drive(h, p, false, started, &BTreeSet::new());
        true
    }

    /// The id of our next membership change.
    fn next_view(&self, incarnation: Incarnation) -> ViewId {
        self.view.next_view(incarnation)
    }

    /// Becomes the coordinator of `p` (phase I): multicasts the AGREE and
    /// waits for every member but the subjects, the `exclude`d and us.
    pub(crate) fn start_drive(
        &mut self,
        h: &mut HandlerCtx<'_>,
        p: Proposal,
        takeover: bool,
        started: Instant,
        exclude: &BTreeSet<u64>,
    ) {
        let expected: BTreeMap<u64, Acker> = self
            .table
            .rows
            .iter()
            .filter(|r| r.rank != self.my_rank && !p.removes(r.rank) && !exclude.contains(&r.rank))
            .map(|r| {
                (
                    r.rank,
                    Acker {
                        addr: r.addr,
                        acked: false,
                        sends: 1,
                        refusing_since: None,
                        dead: self.dead.contains(&r.rank),
                    },
                )
            })
            .collect();
        if !takeover {
            self.originated = Some((p.clone(), started));
        }
        let anyone = expected.values().any(|a| !a.dead);
        self.drive = Some(Drive {
            proposal: p.clone(),
            takeover,
            started,
            expected,
            next_retx: h.now + h.cx.t.reply_timeout,
            delay_until: None,
        });
        if anyone {
            h.io.multicast(self.view, Msg::agree(p, takeover));
        }
        self.check_phase_one(h);
    }

    /// Phase I is over when every expected member ACKed or is taken as
    /// failed; then (after `commit_delay`) the COMMIT.
    pub(crate) fn check_phase_one(&mut self, h: &mut HandlerCtx<'_>) {
        let Some(d) = &self.drive else {
            return;
        };
        if d.delay_until.is_some() || !d.expected.values().all(|a| a.acked || a.dead) {
            return;
        }
        let silent: Vec<u64> = d
            .expected
            .iter()
            .filter(|(_, a)| a.dead && !a.acked)
            .map(|(r, _)| *r)
            .collect();
        for rank in silent {
            if self.add_fail(h.now, rank, RemovalReason::Failed) {
                h.io.stats.silent_failures += 1;
            }
        }
        if let Some(delay) = h.cx.t.commit_delay {
            if let Some(d) = &mut self.drive {
                d.delay_until = Some(h.now + delay);
            }
            return;
        }
        self.send_commit(h);
    }

    /// Phase II: multicast the COMMIT and install it.
    pub(crate) fn send_commit(&mut self, h: &mut HandlerCtx<'_>) {
        let Some(d) = self.drive.take() else {
            return;
        };
        let table = self.table.apply(&d.proposal);
        let commit = Commit {
            proposal: d.proposal,
            table,
        };
        h.io.multicast(self.view, Msg::Commit(commit.clone()));
        if commit.proposal.is_merge() {
            self.send_merge_commit(h, self.view, &commit);
            h.io.stats.merges_coordinated += 1;
        }
        h.io.stats.changes_coordinated += 1;
        self.install(h, commit, d.started);
    }

    /// Withdraws the change we coordinate (a higher-priority one is in
    /// progress): ABORT to the group, requeue, back off.
    pub(crate) fn abort_drive(&mut self, h: &mut HandlerCtx<'_>) {
        let Some(d) = self.drive.take() else {
            return;
        };
        h.io.multicast(
            self.view,
            Msg::Abort {
                proposal: d.proposal.view,
            },
        );
        self.remember_aborted(d.proposal.view);
        h.io.stats.aborts += 1;
        if d.takeover {
            // Not ours to re-propose unchanged: requeue its removals.
            for x in &d.proposal.removals {
                self.add_fail(h.now, x.rank, x.reason);
            }
        }
        self.retry_after = h.now + h.cx.t.abort_backoff;
        self.resume_idle(h.now, h.cx);
    }

    /// The coordinator's phase timers: retransmissions (non-responders
    /// become failed after the retries; a late round resets the count) and
    /// the delayed COMMIT.
    pub(crate) fn drive_timer(&mut self, h: &mut HandlerCtx<'_>, late: bool) {
        let view = self.view;
        let Some(d) = &mut self.drive else {
            return;
        };
        if let Some(t) = d.delay_until {
            if h.now >= t {
                self.send_commit(h);
            }
            return;
        }
        if h.now < d.next_retx {
            return;
        }
        let max = h.cx.t.change_retries.saturating_add(1);
        let mut resend = Vec::new();
        for a in d.expected.values_mut() {
            if a.acked || a.dead {
                continue;
            }
            if late {
                a.sends = 0;
            }
            let refusing_too_long = a
                .refusing_since
                .is_some_and(|t| h.now.saturating_duration_since(t) > h.cx.t.refuse_limit);
            if a.sends >= max || refusing_too_long {
                a.dead = true;
                continue;
            }
            a.sends += 1;
            resend.push(a.addr);
        }
        d.next_retx = h.now + h.cx.t.reply_timeout;
        let msg = Msg::agree(d.proposal.clone(), d.takeover);
        for addr in resend {
            h.io.send(addr, view, msg.clone());
        }
        self.check_phase_one(h);
    }

    // ----- receiving change messages -------------------------------------

    /// An AGREE_J or AGREE_L from member `from` (seed 003 figure 27b):
    /// ACK it if idle; refuse it (BUSY) if holding another change, or
    /// withdraw ours if it outranks ours.
    pub(crate) fn on_agree(
        &mut self,
        h: &mut HandlerCtx<'_>,
        from: super::table::Row,
        view: ViewId,
        p: Proposal,
        takeover: bool,
    ) {
        if view != self.view {
            if view.position() < self.view.position() {
                if p.view == self.view || view == self.last_commit.0 {
                    // We committed it, or another change of the same base
                    // view that the sender (a member of our view) has not
                    // heard of yet: the COMMIT that installed our view
                    // brings it here. (NOT_MEMBER would be wrong: it may
                    // arrive after that COMMIT, in our own view.)
                    self.resend_commit(h, from.addr);
                } else {
                    // The proposer is behind the group: tell it.
                    h.io.stats.drops.stale_view += 1;
                    self.send_not_member(h, from.addr);
                }
            } else if view.position() > self.view.position() {
                h.io.stats.drops.future_view += 1;
            } else {
                h.io.stats.drops.stale_view += 1;
            }
            return;
        }
        if p.validate(view, &self.table).is_err() {
            h.io.stats.drops.invalid_proposal += 1;
            return;
        }
        if p.removes(self.my_rank) {
            h.io.stats.drops.agree_removes_me += 1;
            return;
        }
        self.seen_drivers.insert(from.rank);
        self.seen_drivers.insert(p.originator);
        let key = p.key(takeover);
        if let Some(d) = &self.drive {
            if d.proposal.view == p.view {
                if d.proposal != p {
                    h.io.stats.drops.invalid_proposal += 1;
                } else {
                    // Another coordinator of our change: agree.
                    h.io.send(from.addr, self.view, Msg::AgreeAck { proposal: p.view });
                }
                return;
            }
            let mine = d.proposal.key(d.takeover);
            if key.outranks(&mine) && d.delay_until.is_none() {
                self.abort_drive(h);
            } else {
                let locked = d.proposal.view;
                h.io.send(
                    from.addr,
                    self.view,
                    Msg::Busy {
                        refused: p.view,
                        locked,
                        key: mine,
                    },
                );
                return;
            }
        }
        if let Some(l) = &mut self.lock {
            if l.proposal.view == p.view {
                if l.proposal != p {
                    h.io.stats.drops.invalid_proposal += 1;
                    return;
                }
                if l.driver != from.addr || takeover {
                    l.election = None;
                }
                l.driver = from.addr;
                l.driver_rank = from.rank;
                l.takeover |= takeover;
                l.commit_deadline = h.now + h.cx.t.commit_timeout;
                l.nudge_at = h.now + h.cx.t.nudge_interval;
                h.io.send(from.addr, self.view, Msg::AgreeAck { proposal: p.view });
                return;
            }
            let held: PriorityKey = l.proposal.key(l.takeover);
            let (held_id, driver) = (l.proposal.view, l.driver);
            h.io.send(
                from.addr,
                self.view,
                Msg::Busy {
                    refused: p.view,
                    locked: held_id,
                    key: held,
                },
            );
            // Ours is outranked: ask its coordinator whether it still
            // stands (it answers an ACK for a withdrawn change with ABORT).
            if key.outranks(&held) && h.io.allow(h.now, driver, MsgKind::AgreeAck) {
                h.io.send(driver, self.view, Msg::AgreeAck { proposal: held_id });
            }
            return;
        }
        self.lock = Some(Lock {
            proposal: p.clone(),
            takeover,
            driver: from.addr,
            driver_rank: from.rank,
            since: h.now,
            commit_deadline: h.now + h.cx.t.commit_timeout,
            nudge_at: h.now + h.cx.t.nudge_interval,
            election: None,
        });
        h.io.send(from.addr, self.view, Msg::AgreeAck { proposal: p.view });
    }

    /// Re-sends the COMMIT of our current view to `to` (rate-limited).
    pub(crate) fn resend_commit(&mut self, h: &mut HandlerCtx<'_>, to: NodeId) {
        if h.io.allow(h.now, to, MsgKind::Commit) {
            let (base, c) = self.last_commit.clone();
            h.io.send(to, base, Msg::Commit(c));
        }
    }

    /// An AGREE_ACK (or a nudge) from member `from`.
    pub(crate) fn on_ack(
        &mut self,
        h: &mut HandlerCtx<'_>,
        from: super::table::Row,
        proposal: ViewId,
    ) {
        if let Some(d) = &mut self.drive {
            if d.proposal.view == proposal {
                match d.expected.get_mut(&from.rank) {
                    Some(a) if a.acked => h.io.stats.drops.duplicate += 1,
                    Some(a) => {
                        a.acked = true;
                        a.refusing_since = None;
                    }
                    None => h.io.stats.drops.unexpected += 1,
                }
                self.check_phase_one(h);
                return;
            }
        }
        if proposal == self.view {
            h.io.stats.drops.duplicate += 1;
            self.resend_commit(h, from.addr);
        } else if self.aborted.contains(&proposal) {
            h.io.stats.drops.duplicate += 1;
            if h.io.allow(h.now, from.addr, MsgKind::Abort) {
                h.io.send(from.addr, self.view, Msg::Abort { proposal });
            }
        } else {
            h.io.stats.drops.unexpected += 1;
        }
    }

    /// A BUSY: `from` holds another change. It is alive; if its change
    /// outranks ours, withdraw ours.
    pub(crate) fn on_busy(
        &mut self,
        h: &mut HandlerCtx<'_>,
        from: super::table::Row,
        refused: ViewId,
        key: PriorityKey,
    ) {
        let Some(d) = &mut self.drive else {
            h.io.stats.drops.unexpected += 1;
            return;
        };
        if d.proposal.view != refused {
            h.io.stats.drops.unexpected += 1;
            return;
        }
        if let Some(a) = d.expected.get_mut(&from.rank) {
            a.sends = 0;
            a.refusing_since.get_or_insert(h.now);
        }
        let mine = d.proposal.key(d.takeover);
        if key.outranks(&mine) && d.delay_until.is_none() {
            self.abort_drive(h);
        }
    }

    /// An ABORT: the change we hold was withdrawn.
    pub(crate) fn on_abort(&mut self, h: &mut HandlerCtx<'_>, proposal: ViewId) {
        if self
            .lock
            .as_ref()
            .is_some_and(|l| l.proposal.view == proposal)
        {
            self.lock = None;
            self.resume_idle(h.now, h.cx);
            self.maybe_propose(h);
        } else {
            h.io.stats.drops.duplicate += 1;
        }
    }

    /// A COMMIT (figure 27b, lines 10-19): installed only for the change we
    /// hold, checked against our own computation; a newer view without us
    /// means we were failed.
    pub(crate) fn on_commit(&mut self, h: &mut HandlerCtx<'_>, base: ViewId, c: Commit) {
        if let Some(p) = self.held() {
            if p.view == c.proposal.view && base == self.view {
                if *p != c.proposal || self.table.apply(p) != c.table {
                    h.io.stats.drops.commit_mismatch += 1;
                    return;
                }
                if self.drive.as_ref().is_some_and(|d| d.takeover) {
                    h.io.stats.compressed_takeovers += 1;
                }
                let since = self.held_since(h.now);
                self.install(h, c, since);
                return;
            }
        }
        if c.proposal.view == self.view {
            h.io.stats.drops.duplicate += 1;
            return;
        }
        if c.proposal.view.position() > self.view.position()
            && !c.table.contains(h.cx.me, h.cx.incarnation)
            && c.table.validate().is_ok()
        {
            self.on_newer_view(h, c.proposal.view);
            return;
        }
        h.io.stats.drops.unacked_commit += 1;
    }
}
