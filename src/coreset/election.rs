//! Coordinator failure (seed 003, section III.C, figure 28): a member
//! holding an ACKed change whose COMMIT does not come nudges the
//! coordinator, then suspects it and multicasts `CO_FAIL` with its status;
//! members exchange their statuses. One that committed re-sends the COMMIT
//! (the compressed three-phase protocol); else the lowest rank that
//! finished phase I takes the change over and reruns it without the
//! suspect and the silent members (the full three-phase protocol), whose
//! failure is processed right after.

use super::context::HandlerCtx;
use super::member::{Election, Joined};
use super::msg::{CoFail, CoStatus, Msg, MsgKind, RemovalReason};
use crate::id::ViewId;
use std::collections::{BTreeMap, BTreeSet};

impl Joined {
    /// The ACK-holder's timers: nudge the coordinator, suspect it when the
    /// COMMIT is overdue (CO_FAIL), run the election.
    pub(crate) fn lock_timer(&mut self, h: &mut HandlerCtx<'_>, late: bool) {
        let view = self.view;
        let Some(l) = &mut self.lock else {
            return;
        };
        if let Some(e) = &l.election {
            if h.now >= e.deadline {
                self.check_election(h, true, late);
            }
            return;
        }
        // What nudges the coordinator: our ACK again.
        let ack = Msg::AgreeAck {
            proposal: l.proposal.view,
        };
        if h.now >= l.commit_deadline {
            if late {
                // Starved: give the coordinator another chance first.
                l.commit_deadline = h.now + h.cx.t.reply_timeout;
                l.nudge_at = h.now + h.cx.t.nudge_interval;
                h.io.send(l.driver, view, ack);
            } else {
                let suspect = l.driver_rank;
                self.start_election(h, suspect);
            }
        } else if h.now >= l.nudge_at {
            l.nudge_at = h.now + h.cx.t.nudge_interval;
            h.io.send(l.driver, view, ack);
        }
    }

    /// Suspects the coordinator `suspect` of the held change: CO_FAIL with
    /// our status (phase I finished) to the group.
    pub(crate) fn start_election(&mut self, h: &mut HandlerCtx<'_>, suspect: u64) {
        let view = self.view;
        let my_rank = self.my_rank;
        let Some(l) = &mut self.lock else {
            return;
        };
        let mut statuses = BTreeMap::new();
        statuses.insert(my_rank, CoStatus::PhaseI);
        l.election = Some(Election {
            suspect,
            statuses,
            deadline: h.now + h.cx.t.reply_timeout,
            sends: 1,
        });
        h.io.stats.elections += 1;
        h.io.multicast(
            view,
            Msg::CoFail {
                proposal: l.proposal.view,
                suspect,
                status: CoStatus::PhaseI,
                reply: false,
            },
        );
    }

    /// A CO_FAIL from member `from` (figure 28).
    pub(crate) fn on_co_fail(
        &mut self,
        h: &mut HandlerCtx<'_>,
        from: super::table::Row,
        view: ViewId,
        co_fail: CoFail,
    ) {
        let CoFail {
            proposal,
            suspect,
            status,
            reply,
        } = co_fail;
        if proposal == self.view {
            // We committed it: the compressed three-phase protocol. Send
            // the COMMIT again to everyone still waiting, and have the old
            // coordinator checked (one prober: the lowest other rank).
            if h.io.allow(h.now, h.cx.group_addr, MsgKind::Commit) {
                let (base, c) = self.last_commit.clone();
                h.io.multicast(base, Msg::Commit(c));
            }
            let prober = self
                .table
                .rows
                .iter()
                .find(|r| r.rank != suspect)
                .map(|r| r.rank);
            if prober == Some(self.my_rank) && suspect != self.my_rank {
                self.probe(h, suspect, false);
            }
            return;
        }
        if view != self.view {
            if view.position() < self.view.position() {
                h.io.stats.drops.stale_view += 1;
            } else {
                h.io.stats.drops.future_view += 1;
            }
            return;
        }
        if self
            .drive
            .as_ref()
            .is_some_and(|d| d.proposal.view == proposal)
        {
            // We coordinate it and are alive: the election is off.
            if h.io.allow(h.now, h.cx.group_addr, MsgKind::CoFail) {
                h.io.multicast(
                    self.view,
                    Msg::CoFail {
                        proposal,
                        suspect: self.my_rank,
                        status: CoStatus::Driving,
                        reply: true,
                    },
                );
            }
            return;
        }
        if self.aborted.contains(&proposal) {
            if h.io.allow(h.now, from.addr, MsgKind::Abort) {
                h.io.send(from.addr, self.view, Msg::Abort { proposal });
            }
            return;
        }
        let holds = self
            .lock
            .as_ref()
            .is_some_and(|l| l.proposal.view == proposal);
        if !holds {
            if !reply && h.io.allow(h.now, h.cx.group_addr, MsgKind::CoFail) {
                h.io.multicast(
                    self.view,
                    Msg::CoFail {
                        proposal,
                        suspect,
                        status: CoStatus::Unknown,
                        reply: true,
                    },
                );
            }
            return;
        }
        let my_rank = self.my_rank;
        let Some(l) = &mut self.lock else {
            return;
        };
        if status == CoStatus::Driving {
            let was_suspect = l.election.as_ref().is_some_and(|e| e.suspect == from.rank);
            if from.rank == l.driver_rank || was_suspect {
                l.driver = from.addr;
                l.driver_rank = from.rank;
                l.election = None;
                l.commit_deadline = h.now + h.cx.t.commit_timeout;
                l.nudge_at = h.now + h.cx.t.nudge_interval;
            }
            return;
        }
        if suspect != l.driver_rank && !l.election.as_ref().is_some_and(|e| e.suspect == suspect) {
            // They suspect a coordinator we no longer wait for: just say
            // where we stand.
            if !reply && h.io.allow(h.now, h.cx.group_addr, MsgKind::CoFail) {
                h.io.multicast(
                    self.view,
                    Msg::CoFail {
                        proposal,
                        suspect,
                        status: CoStatus::PhaseI,
                        reply: true,
                    },
                );
            }
            return;
        }
        if l.election.is_none() {
            self.start_election(h, suspect);
        }
        if let Some(e) = self.lock.as_mut().and_then(|l| l.election.as_mut()) {
            e.statuses.insert(from.rank, status);
            e.statuses.insert(my_rank, CoStatus::PhaseI);
        }
        self.check_election(h, false, false);
    }

    /// Ends the election when every expected member answered (or, from the
    /// timer, after the retries): the lowest rank that finished phase I
    /// takes over; the others wait for it.
    pub(crate) fn check_election(&mut self, h: &mut HandlerCtx<'_>, timer: bool, late: bool) {
        let view = self.view;
        let my_rank = self.my_rank;
        let Some(l) = &mut self.lock else {
            return;
        };
        let Some(e) = &mut l.election else {
            return;
        };
        let expected: BTreeSet<u64> = self
            .table
            .rows
            .iter()
            .map(|r| r.rank)
            .filter(|r| {
                *r != my_rank
                    && *r != e.suspect
                    && !l.proposal.removes(*r)
                    && !self.dead.contains(r)
            })
            .collect();
        let all = expected.iter().all(|r| e.statuses.contains_key(r));
        if !all {
            if !timer || h.now < e.deadline {
                return;
            }
            if late || e.sends < h.cx.t.retries.saturating_add(1) {
                if !late {
                    e.sends += 1;
                }
                e.deadline = h.now + h.cx.t.reply_timeout;
                let (proposal, suspect) = (l.proposal.view, e.suspect);
                h.io.multicast(
                    view,
                    Msg::CoFail {
                        proposal,
                        suspect,
                        status: CoStatus::PhaseI,
                        reply: false,
                    },
                );
                return;
            }
        }
        let elected = e
            .statuses
            .iter()
            .filter(|(_, s)| matches!(s, CoStatus::PhaseI | CoStatus::Committed))
            .map(|(r, _)| *r)
            .min()
            .unwrap_or(my_rank);
        let silent: BTreeSet<u64> = expected
            .iter()
            .filter(|r| !e.statuses.contains_key(r))
            .copied()
            .collect();
        let suspect = e.suspect;
        if elected == my_rank {
            self.take_over(h, suspect, silent);
        } else if let Some(row) = self.table.by_rank(elected) {
            l.driver = row.addr;
            l.driver_rank = elected;
            l.election = None;
            l.commit_deadline = h.now + h.cx.t.commit_timeout;
            l.nudge_at = h.now + h.cx.t.nudge_interval;
        }
    }

    /// Takes over the held change from the failed coordinator `suspect`
    /// (three-phase protocol): rerun phase I of the same change without
    /// the suspect and the silent members, which go on the fail list and
    /// are removed right after.
    fn take_over(&mut self, h: &mut HandlerCtx<'_>, suspect: u64, silent: BTreeSet<u64>) {
        let Some(l) = self.lock.take() else {
            return;
        };
        h.io.stats.takeovers += 1;
        if self.add_fail(h.now, suspect, RemovalReason::Failed) {
            h.io.stats.silent_failures += 1;
        }
        if let Some(e) = self.fail_list.get_mut(&suspect) {
            e.coordinator = true;
        }
        for s in &silent {
            if self.add_fail(h.now, *s, RemovalReason::Failed) {
                h.io.stats.silent_failures += 1;
            }
        }
        let mut exclude = silent;
        exclude.insert(suspect);
        self.start_drive(h, l.proposal, true, l.since, &exclude);
    }
}
