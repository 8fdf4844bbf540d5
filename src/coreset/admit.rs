//! Join requests at a member of the view (seed 003, figure 26): the
//! coordinator of joins queues them (holding flapping members down, see
//! `flap.rs`) and proposes them in one AGREE_J (`change.rs`); the others
//! help a newcomer that keeps asking find the group. The newcomer's own
//! side is `join.rs`.

use super::context::HandlerCtx;
use super::member::{JoinRequest, Joined, QueuedJoin, MAX_JOIN_QUEUE};
use super::msg::{JoinRefusal, Msg, MsgKind};
use crate::id::{Incarnation, NodeId};

impl Joined {
    /// A join request (figure 26): the coordinator queues it (and answers
    /// JOIN_WAIT while busy); a member whose request repeats but who is
    /// already in the table gets the view re-sent; the second and third
    /// ranks tell a repeating newcomer that the group exists.
    pub(crate) fn on_join_req(
        &mut self,
        h: &mut HandlerCtx<'_>,
        source: NodeId,
        incarnation: Incarnation,
        req: JoinRequest,
    ) {
        let JoinRequest {
            attempt,
            rejoin,
            child,
            declined,
        } = req;
        if child.as_ref().is_some_and(|c| !c.is_valid()) {
            h.io.stats.drops.malformed += 1;
            return;
        }
        // A parent group is one level above its child set; no claim means
        // level 1. A claim that does not fit is refused for good.
        let claimed = child.as_ref().map_or(0, |c| c.level);
        if claimed.saturating_add(1) != self.table.tree.level {
            if self.is_join_coordinator() && h.io.allow(h.now, source, MsgKind::JoinRefused) {
                h.io.stats.join_refusals += 1;
                let reason = JoinRefusal::LevelMismatch {
                    level: self.table.tree.level,
                    claimed,
                };
                h.io.send(source, self.view, Msg::JoinRefused { reason });
            }
            return;
        }
        let child_group = child.map(|c| c.group);
        if let Some(r) = self.table.by_addr(source).copied() {
            if r.incarnation == incarnation {
                // Admitted, but it missed the COMMIT.
                if self.is_join_coordinator() {
                    self.resend_commit(h, source);
                }
                h.io.stats.drops.duplicate += 1;
                return;
            }
            if incarnation < r.incarnation {
                h.io.stats.drops.stale_incarnation += 1;
                return;
            }
            // A newer life: its old one is on the fail list (restart_hint)
            // and is removed before the new one is admitted.
        }
        if self.is_join_coordinator() {
            if rejoin {
                if let Some(left) = self.held_down_for(h.now, h.cx, source) {
                    // A flapping member: not before its hold-down ends.
                    self.join_queue.remove(&source);
                    if h.io.allow(h.now, source, MsgKind::JoinWait) {
                        h.io.stats.held_down_refusals += 1;
                        // Rounded up: never 0, which would mean "busy".
                        let held_down_ms = u64::try_from(left.as_micros().div_ceil(1000))
                            .unwrap_or(u64::MAX)
                            .max(1);
                        h.io.send(source, self.view, Msg::JoinWait { held_down_ms });
                    }
                    return;
                }
            }
            let room = self.join_queue.len() < MAX_JOIN_QUEUE;
            match self.join_queue.get_mut(&source) {
                Some(q) => {
                    if incarnation > q.incarnation {
                        q.incarnation = incarnation;
                        q.since = h.now;
                    }
                    q.last_heard = h.now;
                    q.rejoin = rejoin;
                    q.declined = declined;
                    q.child_group = child_group;
                }
                None if room => {
                    self.join_queue.insert(
                        source,
                        QueuedJoin {
                            incarnation,
                            since: h.now,
                            last_heard: h.now,
                            rejoin,
                            declined,
                            child_group,
                        },
                    );
                }
                None => {
                    h.io.stats.drops.unexpected += 1;
                    return;
                }
            }
            if (self.busy() || self.table.by_addr(source).is_some())
                && h.io.allow(h.now, source, MsgKind::JoinWait)
            {
                h.io.send(source, self.view, Msg::JoinWait { held_down_ms: 0 });
            }
            self.maybe_propose(h);
        } else if attempt >= 1 {
            let pos = self.table.rows.iter().position(|r| r.rank == self.my_rank);
            if matches!(pos, Some(1) | Some(2)) && h.io.allow(h.now, source, MsgKind::JoinWait) {
                h.io.send(source, self.view, Msg::JoinWait { held_down_ms: 0 });
            }
        }
    }
}
