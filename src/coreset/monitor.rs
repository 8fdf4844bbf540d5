//! Ring monitoring (seed 003, section IV.C.4.c, figure 24), fast crash
//! detection and local health (issue 4, items 3 and 4), and the group's
//! announcements.
//!
//! - Every idle member sends its counter-clockwise neighbour (the member
//!   that monitors it) an unprompted `REPLY` each query interval. A monitor
//!   that has not heard its clockwise neighbour for a query interval plus
//!   half a reply timeout sends a `QUERY`, again each reply timeout, `1 +
//!   retries` times; then the neighbour goes on the fail list. Nothing of
//!   this runs while a change is in progress.
//! - An unreachable report about a member is a strong hint: one immediate
//!   `QUERY`; a second report, or no answer within a reply timeout,
//!   confirms it.
//! - A timer round that fires more than a reply timeout late (the process
//!   was starved or stopped) restarts instead of accusing anyone.
//! - The lowest rank announces the view to the group every announce
//!   interval: newcomers hear that the group exists, a member that missed
//!   views learns it, and a subgroup of the same name (two founders, or a
//!   split) learns about the other and they merge (`merge.rs`).

use super::context::{Ctx, HandlerCtx};
use super::member::{Joined, Monitor, Probe};
use super::msg::{Msg, MsgKind, RemovalReason};
use super::table::Row;
use crate::id::{NodeId, ViewId};
use crate::time::Instant;

/// How often a probe's QUERY is repeated within its reply timeout: a
/// quarter of it, so a dying member's closed port is reported within a
/// few milliseconds of its death instead of after the whole timeout.
fn probe_resend(cx: &Ctx) -> std::time::Duration {
    cx.t.reply_timeout / 4
}

impl Joined {
    /// Every timer of a member, in order: the change in progress, probes,
    /// monitoring, the announcement, then a new change if one is due.
    pub(crate) fn on_timeout(&mut self, h: &mut HandlerCtx<'_>, late: bool) {
        let ttl = h.cx.t.join_ttl;
        self.join_queue.retain(|_, q| q.last_heard + ttl > h.now);
        if self.merge_collect_until.is_some_and(|t| h.now >= t) {
            self.merge_collect_until = None;
        }
        self.drive_timer(h, late);
        self.lock_timer(h, late);
        self.probe_timer(h, late);
        self.ahead_timer(h);
        if h.io.transition.is_some() {
            return;
        }
        if !self.busy() {
            if self.is_lowest() && h.now >= self.announce_next {
                self.announce_next = h.now + h.cx.t.announce_interval;
                // A starved member's view may be stale: do not announce it
                // before the next round.
                if !late {
                    let size = u32::try_from(self.table.len()).unwrap_or(u32::MAX);
                    h.io.multicast(self.view, Msg::Announce { size });
                    // Our monitor hears it too: it stands in for the next
                    // heartbeat.
                    self.monitor.next_heartbeat = h.now + h.cx.t.query_interval;
                }
            }
            self.monitor_timer(h, late);
            self.suspect_timer(h);
        }
        self.maybe_propose(h);
    }

    /// Restarts monitoring after a change (or at the first view): new
    /// neighbours, a fresh baseline, a heartbeat at once.
    pub(crate) fn resume_idle(&mut self, now: Instant, cx: &Ctx) {
        let me = self.table.by_rank(self.my_rank).copied();
        let (target, heartbeat_to) = match me {
            Some(me) if self.table.len() > 1 => (
                self.table.by_rank(me.cw).map(|r| (r.rank, r.addr)),
                self.table.by_rank(me.ccw).map(|r| r.addr),
            ),
            _ => (None, None),
        };
        self.monitor = Monitor {
            target,
            heartbeat_to,
            last_heard: now,
            queries: 0,
            next_check: now + cx.t.overdue_after,
            next_heartbeat: now,
        };
        if self.announce_next <= now {
            self.announce_next = now + cx.t.announce_interval;
        }
    }

    fn monitor_timer(&mut self, h: &mut HandlerCtx<'_>, late: bool) {
        let view = self.view;
        if let Some(to) = self.monitor.heartbeat_to {
            if h.now >= self.monitor.next_heartbeat {
                h.io.send(to, view, Msg::Reply { heartbeat: true });
                let next = self.monitor.next_heartbeat + h.cx.t.query_interval;
                self.monitor.next_heartbeat = if next > h.now {
                    next
                } else {
                    h.now + h.cx.t.query_interval
                };
            }
        }
        let Some((rank, addr)) = self.monitor.target else {
            return;
        };
        if h.now < self.monitor.next_check {
            return;
        }
        if late {
            // Local health: our own lateness is no evidence against it.
            self.monitor.queries = 0;
        }
        if self.monitor.queries <= h.cx.t.retries {
            if self.monitor.queries == 0 {
                h.io.stats.overdue += 1;
            } else {
                // Its heartbeat is overdue and our QUERY went unanswered:
                // we stop hearing the group too (`failures_seen`).
                self.failures_seen = Some(h.now);
            }
            self.monitor.queries += 1;
            self.monitor.next_check = h.now + h.cx.t.reply_timeout;
            h.io.send(addr, view, Msg::Query);
        } else {
            self.monitor.queries = 0;
            self.monitor.next_check = h.now + h.cx.t.overdue_after;
            if self.add_fail(h.now, rank, RemovalReason::Failed) {
                self.note_silenced(h.now, addr);
                h.io.stats.monitor_failures += 1;
                self.sweep_after(h, rank);
            }
        }
    }

    fn probe_timer(&mut self, h: &mut HandlerCtx<'_>, late: bool) {
        let view = self.view;
        for p in self.probes.values_mut() {
            if p.resend_at <= h.now && h.now < p.deadline {
                p.resend_at = h.now + probe_resend(h.cx);
                h.io.send(p.addr, view, Msg::Query);
            }
        }
        let due: Vec<u64> = self
            .probes
            .iter()
            .filter(|(_, p)| p.deadline <= h.now)
            .map(|(r, _)| *r)
            .collect();
        for rank in due {
            if self.probes.get(&rank).is_some_and(|p| p.soft) {
                // A sweep probe unanswered: no evidence, no accusation.
                self.probes.remove(&rank);
                continue;
            }
            if late {
                if let Some(p) = self.probes.get_mut(&rank) {
                    p.deadline = h.now + h.cx.t.reply_timeout;
                    p.resend_at = h.now + probe_resend(h.cx);
                    let addr = p.addr;
                    h.io.send(addr, self.view, Msg::Query);
                }
            } else {
                if let Some(addr) = self.probes.get(&rank).map(|p| p.addr) {
                    self.note_silenced(h.now, addr);
                }
                self.confirm(h, rank);
            }
        }
    }

    /// Sends one QUERY to member `rank` and waits a reply timeout for any
    /// sign of life (`soft`: a sweep, which silence does not confirm).
    pub(crate) fn probe(&mut self, h: &mut HandlerCtx<'_>, rank: u64, soft: bool) {
        if self.probes.contains_key(&rank) || self.fail_list.contains_key(&rank) {
            return;
        }
        let Some(r) = self.table.by_rank(rank).copied() else {
            return;
        };
        self.probes.insert(
            rank,
            Probe {
                addr: r.addr,
                deadline: h.now + h.cx.t.reply_timeout,
                resend_at: h.now + probe_resend(h.cx),
                soft,
            },
        );
        h.io.send(r.addr, self.view, Msg::Query);
    }

    /// Member `failed` was just taken as failed: before proposing, check
    /// its nearest unsuspected neighbour on each side of the ring (the one
    /// it monitored, which nobody watches now, and the one that monitored
    /// it). If one of those is dead too, it is found in about one round
    /// trip and the same change removes both (failures are batched).
    pub(crate) fn sweep_after(&mut self, h: &mut HandlerCtx<'_>, failed: u64) {
        let n = self.table.len();
        let Some(start) = self.table.rows.iter().position(|r| r.rank == failed) else {
            return;
        };
        for step in [1, n.saturating_sub(1)] {
            for k in 1..n {
                let i = (start + k * step) % n;
                let Some(r) = self.table.rows.get(i).copied() else {
                    break;
                };
                if r.rank == self.my_rank {
                    break;
                }
                if self.fail_list.contains_key(&r.rank) || self.dead.contains(&r.rank) {
                    continue;
                }
                self.probe(h, r.rank, true);
                break;
            }
        }
    }

    /// The host reported `node` unreachable.
    pub(crate) fn on_unreachable(&mut self, h: &mut HandlerCtx<'_>, node: NodeId) {
        let Some(r) = self.table.by_addr(node).copied() else {
            h.io.stats.drops.unreachable_non_member += 1;
            return;
        };
        if r.rank == self.my_rank {
            return;
        }
        h.io.stats.unreachable_hints += 1;
        if let Some(p) = self.probes.get_mut(&r.rank).filter(|p| p.soft) {
            // A sweep probe met its first hint: confirm it like any other.
            p.soft = false;
            p.deadline = h.now + h.cx.t.reply_timeout;
            p.resend_at = h.now + probe_resend(h.cx);
            h.io.send(r.addr, self.view, Msg::Query);
        } else if self.probes.contains_key(&r.rank) || self.fail_list.contains_key(&r.rank) {
            self.confirm(h, r.rank);
        } else {
            self.probe(h, r.rank, false);
        }
    }

    /// Member `rank` is confirmed failed: fail list, and at once wherever
    /// we wait for it (phase I, the COMMIT, an election).
    pub(crate) fn confirm(&mut self, h: &mut HandlerCtx<'_>, rank: u64) {
        self.confirm_as(h, rank, RemovalReason::Failed);
    }

    /// [`Joined::confirm`] with the reason the change will carry:
    /// [`RemovalReason::Elsewhere`] for a member that answered from
    /// another view (alive: no flap), `Failed` for every other evidence.
    pub(crate) fn confirm_as(&mut self, h: &mut HandlerCtx<'_>, rank: u64, reason: RemovalReason) {
        self.probes.remove(&rank);
        self.dead.insert(rank);
        if self.add_fail(h.now, rank, reason) {
            h.io.stats.hint_failures += 1;
            self.sweep_after(h, rank);
        }
        if let Some(d) = &mut self.drive {
            if let Some(a) = d.expected.get_mut(&rank) {
                if !a.acked {
                    a.dead = true;
                }
            }
        }
        self.check_phase_one(h);
        let lock_state = self
            .lock
            .as_ref()
            .map(|l| (l.driver_rank, l.election.is_some()));
        match lock_state {
            Some((driver, false)) if driver == rank => self.start_election(h, rank),
            Some((_, true)) => self.check_election(h, false, false),
            _ => {}
        }
        self.maybe_propose(h);
    }

    /// A QUERY from member `from`: answer.
    pub(crate) fn on_query(&mut self, h: &mut HandlerCtx<'_>, from: Row) {
        h.io.send(from.addr, self.view, Msg::Reply { heartbeat: false });
    }

    /// A REPLY (answer or heartbeat) from member `from`.
    pub(crate) fn on_reply(&mut self, now: Instant, cx: &Ctx, from: Row) {
        if self
            .monitor
            .target
            .is_some_and(|(rank, _)| rank == from.rank)
        {
            self.monitor.last_heard = now;
            self.monitor.queries = 0;
            self.monitor.next_check = now + cx.t.overdue_after;
        }
    }

    /// Tells `to` that it is not a member of our view (rate-limited).
    pub(crate) fn send_not_member(&mut self, h: &mut HandlerCtx<'_>, to: NodeId) {
        if h.io.allow(h.now, to, MsgKind::NotMember) {
            h.io.send(to, self.view, Msg::NotMember);
        }
    }

    /// A NOT_MEMBER from a life at member `from`'s address: if its view is
    /// newer than ours, we were failed; otherwise it does not follow our
    /// view (it is in another subgroup, or behind and failed already):
    /// it is gone from ours.
    pub(crate) fn on_not_member(
        &mut self,
        h: &mut HandlerCtx<'_>,
        from: Row,
        incarnation: crate::id::Incarnation,
        view: ViewId,
    ) {
        if view.position() < self.view.position()
            && (view == self.last_commit.0 || self.missed_our_merge(from.addr, incarnation, view))
        {
            // It is one view behind (the COMMIT that installed ours is
            // still on its way to it, or was lost), or our merge absorbed
            // it and it missed that COMMIT: re-send it rather than fail it.
            h.io.stats.drops.stale_view += 1;
            self.resend_commit(h, from.addr);
            return;
        }
        let other_side_behind = view.position() < self.view.position()
            && self
                .merge_grace
                .as_ref()
                .is_some_and(|(until, ours)| h.now < *until && !ours.contains(&from.addr));
        if view == self.view || other_side_behind {
            // It holds our very view, which lists us: this NOT_MEMBER
            // answered something we sent before we installed it. Or it is
            // from another side of the merge we just installed, whose
            // COMMIT is still on its way to it from its own leader.
            h.io.stats.drops.stale_view += 1;
        } else if view.position() > self.view.position() {
            self.on_newer_view(h, view);
        } else if from.rank != self.my_rank {
            // Alive, in a view that is not ours: out of our view, but no
            // flap (its link works; it was admitted elsewhere).
            h.io.stats.drops.stale_view += 1;
            self.confirm_as(h, from.rank, RemovalReason::Elsewhere);
        }
    }

    /// An ANNOUNCE from a member of our view.
    pub(crate) fn on_member_announce(&mut self, h: &mut HandlerCtx<'_>, from: Row, view: ViewId) {
        if view == self.view {
            // As good as a heartbeat from it.
            self.announce_heard = h.now;
            self.on_reply(h.now, h.cx, from);
            return;
        }
        if view.position() > self.view.position() {
            self.on_newer_view(h, view);
        } else if view.position() == self.view.position() {
            // Same number, another view: it follows another subgroup.
            // Take it out of ours (alive: no flap); the subgroups then
            // merge.
            h.io.stats.drops.stale_view += 1;
            self.confirm_as(h, from.rank, RemovalReason::Elsewhere);
        } else {
            h.io.stats.drops.stale_view += 1;
            if self.is_lowest() && h.io.allow(h.now, from.addr, MsgKind::Announce) {
                let size = u32::try_from(self.table.len()).unwrap_or(u32::MAX);
                h.io.send(from.addr, self.view, Msg::Announce { size });
            }
        }
    }
}
