//! Partition resolution: subgroups of one group that hear each other merge
//! in one change (seed 003, section III.D; DESIGN.md section 5,
//! "Partitions"; issue 5).
//!
//! Every subgroup's lowest rank announces it on the group address each
//! announce interval ([`Msg::Announce`]). When the lowest rank of one
//! subgroup hears the announcement of another subgroup of the same group:
//!
//! - the subgroup whose lowest rank is older (its incarnation, a UUID v7,
//!   is time-ordered; ties by address) *leads*; the other *follows*;
//! - the follower's lowest rank sends the leader's a [`Msg::MergeOffer`]
//!   with its view and its members in age order, and for an announce
//!   interval does not lead merges itself (so that three subgroups merge
//!   into the oldest, not into each other), nor offers itself to any
//!   other subgroup unless that one is older still (so that one leader,
//!   not several at once, absorbs it);
//! - a leader that hears a younger subgroup announces itself on the group
//!   address at once, so that every younger subgroup offers together; it
//!   collects offers for a quarter of a reply timeout after the first;
//! - the leader's lowest rank, once idle and with no failure, leave or join
//!   pending (merges have the lowest priority), proposes an `AGREE_M` that
//!   absorbs every fresh offer: the new view's number is one above every
//!   side's, and the merged table ranks every member anew in age order
//!   above every side's rank high-water mark ([`super::table::Table::apply`]);
//! - phase I runs among the leader's subgroup exactly as for any change
//!   (ACKs, BUSY and ABORT, coordinator failure and takeover); the COMMIT
//!   goes to the group and by unicast to every absorbed member;
//! - an absorbed member installs that COMMIT if and only if it is still in
//!   exactly the view its subgroup offered, and the offer listed exactly its
//!   table; a change its subgroup had in progress is superseded. A member
//!   whose subgroup moved on refuses it: the merged group then fails it
//!   (it answers `NOT_MEMBER`), and its subgroup merges again.

use super::context::{Ctx, HandlerCtx};
use super::member::{Joined, MergeOfferEntry};
use super::msg::{Absorbed, Commit, Layer, Msg, MsgKind, Proposal};
use super::table::MAX_MEMBERS;
use crate::id::{Incarnation, NodeId, ViewId};
use crate::time::Instant;
use std::collections::BTreeSet;

/// Most subgroups one leader keeps offers from.
const MAX_OFFERS: usize = 8;

/// How long a leader collects offers after the first one before it
/// proposes the merge: a quarter of a reply timeout (the offers its
/// announcement brings arrive within a round trip).
pub(crate) fn merge_collect(cx: &Ctx) -> std::time::Duration {
    cx.t.reply_timeout / 4
}

impl Joined {
    /// Whether this member speaks for its subgroup in merges: its lowest
    /// rank.
    fn speaks_for_subgroup(&self) -> bool {
        self.is_lowest()
    }

    /// This subgroup's age key: its lowest rank's incarnation and address
    /// (smaller is older).
    fn age_key(&self, cx: &Ctx) -> (Incarnation, NodeId) {
        self.table
            .lowest()
            .map(|r| (r.incarnation, r.addr))
            .unwrap_or((cx.incarnation, cx.me))
    }

    /// An ANNOUNCE from another subgroup of our group (its lowest rank
    /// `source`, not in our table).
    pub(crate) fn on_foreign_announce(
        &mut self,
        h: &mut HandlerCtx<'_>,
        source: NodeId,
        incarnation: Incarnation,
    ) {
        if !self.speaks_for_subgroup() || h.leave.is_some() {
            return;
        }
        if (incarnation, source) < self.age_key(h.cx) {
            // It is older: offer it our subgroup (when idle: a change in
            // progress would make the offer stale at once).
            if self.busy() {
                return;
            }
            // One leader at a time: while an offer stands, only an older
            // subgroup than the one we offered to gets one.
            let key = (incarnation, source);
            if h.now < self.merge_hold_until && self.offered_to.is_some_and(|k| k < key) {
                return;
            }
            if !h.io.allow(h.now, source, MsgKind::MergeOffer) {
                return;
            }
            self.offered_to = Some(key);
            let members = self
                .table
                .rows
                .iter()
                .map(|r| (r.addr, r.incarnation))
                .collect();
            let bits = self
                .table
                .tree
                .members
                .iter()
                .filter_map(|m| self.table.by_rank(m.rank).map(|r| (r.addr, m.bits.clone())))
                .collect();
            h.io.stats.merge_offers += 1;
            self.merge_hold_until = h.now + h.cx.t.announce_interval;
            h.io.send(
                source,
                self.view,
                Msg::MergeOffer {
                    next_rank: self.table.next_rank,
                    members,
                    bits,
                    level: self.table.tree.level,
                    parent_group: self.table.tree.parent_group.clone(),
                },
            );
        } else if h.io.allow(h.now, h.cx.group_addr, MsgKind::Announce) {
            // We lead: announce ourselves to the whole group address at
            // once (not only to this subgroup), so that every younger
            // subgroup that hears us now offers now, and one AGREE_M
            // absorbs them all (rate-limited to one per reply timeout).
            let size = u32::try_from(self.table.len()).unwrap_or(u32::MAX);
            h.io.multicast(self.view, Msg::Announce { size });
        }
    }

    /// A MERGE_OFFER from the lowest rank `source` of a younger subgroup in
    /// view `view`.
    pub(crate) fn on_merge_offer(
        &mut self,
        h: &mut HandlerCtx<'_>,
        source: NodeId,
        incarnation: Incarnation,
        level: u8,
        offered: Absorbed,
    ) {
        if !self.speaks_for_subgroup() || h.leave.is_some() {
            h.io.stats.drops.unexpected += 1;
            return;
        }
        if level != self.table.tree.level {
            // A group of our name at another level: not a subgroup of ours.
            h.io.stats.drops.wrong_group += 1;
            return;
        }
        let Absorbed {
            view,
            next_rank,
            members,
            bits,
            parent_group,
        } = offered;
        let well_formed = members.first() == Some(&(source, incarnation))
            && members.len() <= MAX_MEMBERS
            && (incarnation, source) > self.age_key(h.cx)
            && view.number > 0;
        let mut addrs: Vec<NodeId> = members.iter().map(|(a, _)| *a).collect();
        addrs.sort();
        let distinct = addrs.windows(2).all(|w| w[0] != w[1])
            && addrs.iter().all(|a| !a.addr().ip().is_multicast());
        if !well_formed || !distinct {
            h.io.stats.drops.malformed += 1;
            return;
        }
        if addrs.iter().any(|a| self.table.by_addr(*a).is_some()) {
            // A member of both: one side still lists a member that went to
            // the other. Our monitoring settles it (it answers NOT_MEMBER);
            // the next offer merges.
            h.io.stats.drops.merge_overlap += 1;
            return;
        }
        if self.merge_offers.len() >= MAX_OFFERS && !self.merge_offers.contains_key(&source) {
            h.io.stats.drops.unexpected += 1;
            return;
        }
        if self.merge_offers.is_empty() {
            // The first offer: wait a moment for the others that our
            // announcement brings, to absorb them in one change.
            self.merge_collect_until = Some(h.now + merge_collect(h.cx));
        }
        self.merge_offers.insert(
            source,
            MergeOfferEntry {
                absorbed: Absorbed {
                    view,
                    next_rank,
                    members,
                    bits,
                    parent_group,
                },
                heard: h.now,
            },
        );
        self.maybe_propose(h);
    }

    /// The merge to propose now, if this member leads one: every fresh
    /// offer that fits (oldest subgroups first), nothing if it follows.
    pub(crate) fn merge_proposal(&mut self, now: Instant, cx: &Ctx) -> Option<Proposal> {
        if !self.speaks_for_subgroup()
            || now < self.merge_hold_until
            || self.merge_collect_until.is_some_and(|t| now < t)
        {
            return None;
        }
        let ttl = cx.t.announce_interval;
        self.merge_offers.retain(|_, o| o.heard + ttl > now);
        let mut offers: Vec<&MergeOfferEntry> = self.merge_offers.values().collect();
        offers.sort_by_key(|o| o.absorbed.members.first().map(|(a, i)| (*i, *a)));
        let mut total = self.table.len();
        let mut seen: BTreeSet<NodeId> = self.table.rows.iter().map(|r| r.addr).collect();
        let mut merges = Vec::new();
        for o in offers {
            // A held-down member inside another subgroup does not stop
            // the merge (its healthy members would wait with it); if its
            // link is still bad, the watch of the member that failed it
            // fails it again.
            let fits = total.saturating_add(o.absorbed.members.len()) <= MAX_MEMBERS
                && o.absorbed.members.iter().all(|(a, _)| !seen.contains(a));
            if !fits {
                continue;
            }
            total += o.absorbed.members.len();
            seen.extend(o.absorbed.members.iter().map(|(a, _)| *a));
            merges.push(o.absorbed.clone());
        }
        if merges.is_empty() {
            return None;
        }
        let top = merges
            .iter()
            .map(|a| a.view.number)
            .fold(self.view.number, u64::max);
        Some(Proposal {
            view: ViewId {
                number: top.saturating_add(1),
                seq: 0,
                coordinator: cx.incarnation,
            },
            originator: self.my_rank,
            layer: Layer::Physical,
            coordinator_failure: false,
            removals: Vec::new(),
            joins: Vec::new(),
            merges,
            app: Vec::new(),
            tree: Vec::new(),
        })
    }

    /// A COMMIT from outside our table: a merge that absorbs our subgroup
    /// is installed if it absorbs exactly our view and table.
    pub(crate) fn on_foreign_commit(&mut self, h: &mut HandlerCtx<'_>, c: Commit) {
        if c.proposal.view == self.view {
            h.io.stats.drops.duplicate += 1;
            return;
        }
        let Some(a) = c.proposal.absorbs(self.view) else {
            h.io.stats.drops.non_member += 1;
            return;
        };
        let ours: Vec<(NodeId, Incarnation)> = self
            .table
            .rows
            .iter()
            .map(|r| (r.addr, r.incarnation))
            .collect();
        let fits = a.next_rank == self.table.next_rank
            && a.members == ours
            && c.proposal.view.position() > self.view.position()
            && c.table.validate().is_ok()
            && ours.iter().all(|(addr, inc)| c.table.contains(*addr, *inc));
        if !fits || h.leave.is_some() {
            h.io.stats.drops.commit_mismatch += 1;
            return;
        }
        // Our subgroup's own change in progress is superseded: everyone
        // who holds it is absorbed by this merge too.
        self.drive = None;
        self.lock = None;
        self.drop_originated(None);
        h.io.stats.merges_absorbed += 1;
        self.install(h, c, h.now);
    }

    /// After our merge committed: the COMMIT by unicast to every absorbed
    /// member too (they do not ACK phase I, so a lost multicast would
    /// leave them behind).
    pub(crate) fn send_merge_commit(&self, h: &mut HandlerCtx<'_>, base: ViewId, c: &Commit) {
        for a in &c.proposal.merges {
            for (addr, _) in &a.members {
                h.io.send(*addr, base, Msg::Commit(c.clone()));
            }
        }
    }

    /// A NOT_MEMBER from `from`, a member absorbed by the merge that
    /// installed our view, still in its old view `view`: it missed the
    /// COMMIT; re-send it (rate-limited) rather than fail it.
    pub(crate) fn missed_our_merge(
        &self,
        from: NodeId,
        incarnation: Incarnation,
        view: ViewId,
    ) -> bool {
        let (_, c) = &self.last_commit;
        c.proposal
            .absorbs(view)
            .is_some_and(|a| a.members.contains(&(from, incarnation)))
    }
}
