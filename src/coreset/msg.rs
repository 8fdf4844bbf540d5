//! The core-set protocol's messages (seed 003, section IV.C.4.d, and
//! DESIGN.md section 5), encoded with serde + bincode 2 under the wire
//! codec's limits.
//!
//! Every datagram body is one [`Envelope`]: the group name and the sender's
//! view id (for change messages, the view the change applies to), then the
//! [`Msg`]. Who sent it is not in the body: the wire header's source and
//! incarnation are trusted instead. `docs/protocol.md` lists every message
//! with its fields and when it is sent.

use super::table::{Row, Table, FLAG_ACTIVE, MAX_MEMBERS};
use super::tree::{ChildClaim, GroupRef, MemberBits, TreeOp, TreeOpError, TreeRecord, MAX_LEVEL};
use crate::id::{Incarnation, NodeId, ViewId};
use serde::{Deserialize, Serialize};
use std::cmp::{Ordering, Reverse};

/// Most newcomers one AGREE_J admits.
pub const MAX_JOIN_BATCH: usize = 64;

/// Largest application change payload (bytes): what the application-group
/// layer asks the core-set to commit in one piece.
pub const MAX_APP_PAYLOAD: usize = 4096;

/// Most application payloads one change carries, and most bytes in all
/// (a COMMIT carries them with the whole table, in one datagram).
pub const MAX_APP_BATCH: usize = 64;
/// See [`MAX_APP_BATCH`].
pub const MAX_APP_BATCH_BYTES: usize = 16 * 1024;

/// The view id of "no view yet" (a joiner's envelopes carry it).
pub const NO_VIEW: ViewId = ViewId {
    number: 0,
    seq: 0,
    coordinator: Incarnation::NIL,
};

/// One datagram body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The group name.
    pub group: String,
    /// The sender's current view ([`NO_VIEW`] while joining); for AGREE,
    /// ACK, BUSY, ABORT, COMMIT and CO_FAIL, the view the change applies to
    /// (its base).
    pub view: ViewId,
    /// The message.
    pub msg: Msg,
    /// Above level 1: the sender's life in this group (level 1 uses the
    /// wire header's incarnation; one socket serves every level, so an
    /// upper level's life travels here). `None` at level 1.
    pub life: Option<Incarnation>,
}

/// Which layer of the hierarchy a change belongs to (priority rule 2:
/// physical-hierarchy changes before application-group changes). The
/// variant order is the priority order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Layer {
    /// A change of the mserver group itself.
    Physical,
    /// A change of the tree: who is a parent, where the parent group is
    /// ([`Proposal::tree`]).
    Tree,
    /// A change of application groups: opaque payloads of the
    /// application-group layer ([`Proposal::app`]).
    Application,
}

/// Why a member is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RemovalReason {
    /// It failed (no answer, unreachable, restarted, or did not ACK).
    Failed,
    /// It asked to leave.
    Left,
    /// It is alive but follows another view: it answered `NOT_MEMBER`
    /// from a view that is not ours, or announced another view of our
    /// number (a subgroup that kept it, or a second subgroup that admitted
    /// it while it rejoined after a heal). A disagreement about who is in
    /// which subgroup, not a bad link: it does not count as a flap
    /// (`flap.rs`).
    Elsewhere,
}

/// A member a change removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Removal {
    /// Its rank in the base view.
    pub rank: u64,
    /// Failure or voluntary leave.
    pub reason: RemovalReason,
}

/// A newcomer a change admits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Joiner {
    /// Its address.
    pub addr: NodeId,
    /// The incarnation its M_JOIN_REQ carried.
    pub incarnation: Incarnation,
    /// It rejoins after the group excluded it while it was running (its
    /// M_JOIN_REQ said so): a flap if it is failed again (`flap.rs`).
    pub rejoin: bool,
    /// It is not a candidate for automatic re-parenting.
    pub declined: bool,
    /// Above level 1: the child set it is a parent of (its claim).
    pub child_group: Option<GroupRef>,
}

/// A subgroup a merge absorbs (DESIGN.md section 5, "Partitions"): its
/// view and its members in rank (age) order, as its lowest rank offered
/// them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Absorbed {
    /// The subgroup's view; its members install the merge only while they
    /// are still in exactly this view.
    pub view: ViewId,
    /// Its rank high-water mark (merged ranks start above every side's).
    pub next_rank: u64,
    /// Its members, oldest first.
    pub members: Vec<(NodeId, Incarnation)>,
    /// The tree bits of those of its members that have some.
    pub bits: Vec<(NodeId, MemberBits)>,
    /// Its recorded parent group.
    pub parent_group: Option<GroupRef>,
}

impl Absorbed {
    /// Adds its size to `total`; whether that passes [`MAX_MEMBERS`].
    fn merges_len_overflows(&self, total: &mut usize) -> bool {
        *total = total.saturating_add(self.members.len());
        *total > MAX_MEMBERS
    }
}

/// A proposed change: what phase I agrees on and phase II commits.
///
/// Its identity is `view`, the view it would install: the base view's
/// number + 1 and the incarnation of the member that first proposed it
/// (the *originator*). A member originates at most one proposal per base
/// view, so one view id never names two different tables. A coordinator
/// that takes over after the originator failed re-sends the same proposal
/// unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Proposal {
    /// The view this change installs.
    pub view: ViewId,
    /// The originator's rank in the base view.
    pub originator: u64,
    /// Physical or application group (priority rule 2).
    pub layer: Layer,
    /// It removes a member known to coordinate a change in progress
    /// (priority rule 3).
    pub coordinator_failure: bool,
    /// Members removed, sorted by rank (AGREE_L; empty for AGREE_J).
    pub removals: Vec<Removal>,
    /// Members admitted, sorted by address (AGREE_J; empty for AGREE_L).
    pub joins: Vec<Joiner>,
    /// Subgroups of the same group merged into this one (AGREE_M; empty
    /// otherwise). The new view's number is above every side's.
    pub merges: Vec<Absorbed>,
    /// Application changes (layer [`Layer::Application`]; empty
    /// otherwise): opaque payloads of the application-group layer,
    /// committed in this order at every member (`CoreSetEvent::AppCommitted`).
    pub app: Vec<Vec<u8>>,
    /// A tree change (layer [`Layer::Tree`]; at most one; empty
    /// otherwise): a new view like a membership change.
    pub tree: Vec<TreeOp>,
}

/// Why a proposal does not fit the receiver's base table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalError {
    /// A tree change that does not fit the group's tree record.
    Tree(TreeOpError),
    /// Its view number is not the base's + 1 with commit 0 (for a merge:
    /// one above the highest of the base's and the absorbed views'
    /// numbers), or, for an application change, not the base's view with
    /// the base's commit + 1.
    ViewNumber,
    /// The originator is not in the table, or its incarnation is not the
    /// view id's.
    Originator,
    /// Both or neither of removals and joins, or too many.
    Shape,
    /// Removals not sorted, duplicated, or not members.
    Removals,
    /// Joiners not sorted, duplicated, or already at a member's address.
    Joins,
    /// An absorbed subgroup empty, or sharing an address with the base or
    /// another absorbed subgroup, or a multicast address.
    Merges,
    /// An application-group change (not supported yet).
    Layer,
}

impl Proposal {
    /// Checks the proposal against the base view `base` and its table.
    pub fn validate(&self, base: ViewId, table: &Table) -> Result<(), ProposalError> {
        let top = self
            .merges
            .iter()
            .map(|a| a.view.number)
            .fold(base.number, u64::max);
        let app_shaped = !self.app.is_empty();
        let numbered = if app_shaped {
            // An application change keeps the view and takes the next
            // commit of it.
            self.merges.is_empty()
                && self.view.position() == base.next_commit(base.coordinator).position()
        } else {
            self.view.number == top.saturating_add(1) && self.view.seq == 0
        };
        if !numbered {
            return Err(ProposalError::ViewNumber);
        }
        let tree_shaped = !self.tree.is_empty();
        if (self.layer == Layer::Application) != app_shaped
            || (self.layer == Layer::Tree) != tree_shaped
        {
            return Err(ProposalError::Layer);
        }
        match table.by_rank(self.originator) {
            Some(r) if r.incarnation == self.view.coordinator => {}
            _ => return Err(ProposalError::Originator),
        }
        let app_bytes: usize = self.app.iter().map(Vec::len).sum();
        if self.app.len() > MAX_APP_BATCH
            || app_bytes > MAX_APP_BATCH_BYTES
            || self
                .app
                .iter()
                .any(|a| a.is_empty() || a.len() > MAX_APP_PAYLOAD)
        {
            return Err(ProposalError::Shape);
        }
        let kinds = [
            !self.removals.is_empty(),
            !self.joins.is_empty(),
            !self.merges.is_empty(),
            app_shaped,
            tree_shaped,
        ];
        if kinds.iter().filter(|k| **k).count() != 1
            || self.tree.len() > 1
            || self.removals.len() > table.len()
            || self.joins.len() > MAX_JOIN_BATCH
            || table.len().saturating_add(self.joins.len()) > MAX_MEMBERS
        {
            return Err(ProposalError::Shape);
        }
        if self.removals.windows(2).any(|w| w[0].rank >= w[1].rank)
            || self
                .removals
                .iter()
                .any(|x| table.by_rank(x.rank).is_none())
            || self.removals.len() >= table.len()
        {
            return Err(ProposalError::Removals);
        }
        if self.joins.windows(2).any(|w| w[0].addr >= w[1].addr)
            || self
                .joins
                .iter()
                .any(|j| table.by_addr(j.addr).is_some() || j.addr.addr().ip().is_multicast())
            || self
                .joins
                .iter()
                .any(|j| (table.tree.level > 1) != j.child_group.is_some())
            || (table.tree.level > 1
                && table.len().saturating_add(self.joins.len()) > super::tree::MAX_UPPER_MEMBERS)
        {
            return Err(ProposalError::Joins);
        }
        if let Some(op) = self.tree.first() {
            let ranks: Vec<u64> = table.rows.iter().map(|r| r.rank).collect();
            table
                .tree
                .check(op, self.originator, &ranks)
                .map_err(ProposalError::Tree)?;
        }
        if !self.merges.is_empty() {
            let mut total = table.len();
            let mut addrs: Vec<NodeId> = table.rows.iter().map(|r| r.addr).collect();
            for a in &self.merges {
                if a.members.is_empty() || a.merges_len_overflows(&mut total) {
                    return Err(ProposalError::Merges);
                }
                addrs.extend(a.members.iter().map(|(addr, _)| *addr));
            }
            if addrs.iter().any(|a| a.addr().ip().is_multicast()) {
                return Err(ProposalError::Merges);
            }
            // The tree bits must name members of their side, and above
            // level 1 every absorbed member brings its child set.
            for a in &self.merges {
                let named = |addr: &NodeId| a.members.iter().any(|(m, _)| m == addr);
                let with_child = a
                    .bits
                    .iter()
                    .filter(|(_, b)| b.child_group.as_ref().is_some_and(GroupRef::is_valid))
                    .count();
                let expected = if table.tree.level > 1 {
                    a.members.len()
                } else {
                    0
                };
                if a.bits.iter().any(|(addr, b)| !named(addr) || b.is_plain())
                    || a.bits.len() > a.members.len()
                    || with_child != expected
                    || a.parent_group.as_ref().is_some_and(|g| !g.is_valid())
                {
                    return Err(ProposalError::Merges);
                }
            }
            addrs.sort();
            if addrs.windows(2).any(|w| w[0] == w[1]) {
                return Err(ProposalError::Merges);
            }
        }
        Ok(())
    }

    /// Whether this is an AGREE_M (merges subgroups).
    pub fn is_merge(&self) -> bool {
        !self.merges.is_empty()
    }

    /// The absorbed subgroup whose view is `view`, if this merge absorbs it.
    pub fn absorbs(&self, view: ViewId) -> Option<&Absorbed> {
        self.merges.iter().find(|a| a.view == view)
    }

    /// Whether this is an AGREE_J (admits) rather than an AGREE_L (removes).
    pub fn is_join(&self) -> bool {
        !self.joins.is_empty()
    }

    /// Whether it removes `rank`.
    pub fn removes(&self, rank: u64) -> bool {
        self.removals.iter().any(|x| x.rank == rank)
    }

    /// Its priority key, driven as a takeover (`takeover`) or not.
    pub fn key(&self, takeover: bool) -> PriorityKey {
        // A merge has no subject: it goes after every failure, leave and
        // join (the subgroups are whole and can wait).
        // An application change's subject is the member that submitted it.
        let subject = match (self.removals.first(), self.joins.first()) {
            (Some(x), _) => Subject::Member(x.rank),
            (None, Some(j)) => Subject::Joiner(j.addr),
            (None, None) if !self.app.is_empty() => Subject::Member(self.originator),
            (None, None) if !self.tree.is_empty() => Subject::Member(
                self.tree
                    .first()
                    .map_or(self.originator, |op| op.subject(self.originator)),
            ),
            (None, None) => Subject::Joiner(NodeId::v4(255, 255, 255, 255, 65535)),
        };
        PriorityKey {
            takeover,
            layer: self.layer,
            coordinator_failure: self.coordinator_failure,
            subject,
            batch: u32::try_from(self.removals.len()).unwrap_or(u32::MAX),
            coordinator_rank: self.originator,
        }
    }
}

/// Applying a committed change to the core table: the twin of
/// [`Proposal::validate`], kept beside the proposal so that the table
/// (below the messages) knows nothing of them.
impl Table {
    /// The table after `proposal`: its removals taken out, its joiners
    /// added in address order with ranks `next_rank`, `next_rank + 1`, ...
    /// The caller has checked the proposal against this table
    /// ([`Proposal::validate`]).
    pub fn apply(&self, proposal: &Proposal) -> Table {
        if proposal.is_merge() {
            return self.merged(proposal);
        }
        let mut rows: Vec<Row> = self
            .rows
            .iter()
            .filter(|r| !proposal.removals.iter().any(|x| x.rank == r.rank))
            .copied()
            .collect();
        let mut tree = self.tree.clone();
        tree.retain(|rank| !proposal.removes(rank));
        let mut next_rank = self.next_rank;
        for j in &proposal.joins {
            tree.set(
                next_rank,
                MemberBits {
                    parent: false,
                    declined: j.declined,
                    child_group: j.child_group.clone(),
                },
            );
            rows.push(Row {
                addr: j.addr,
                incarnation: j.incarnation,
                rank: next_rank,
                cw: 0,
                ccw: 0,
                flag: FLAG_ACTIVE,
            });
            next_rank = next_rank.saturating_add(1);
        }
        for op in &proposal.tree {
            tree.apply(op);
        }
        rows.sort_by_key(|r| r.rank);
        let mut t = Table {
            rows,
            next_rank,
            tree,
        };
        t.relink();
        t
    }

    /// The table of a merge: every side's members in age order, ranked
    /// anew above every side's high-water mark so that no rank is reused.
    /// Each side keeps its own order (its ranks are its committed age
    /// order); between sides the older incarnation (UUID v7, time-ordered)
    /// goes first, ties by address. Every member keeps its tree bits; the
    /// group keeps its own record, and takes the parent group of the
    /// first absorbed side that has one if it has none.
    fn merged(&self, proposal: &Proposal) -> Table {
        let mut bits: std::collections::BTreeMap<NodeId, MemberBits> = self
            .tree
            .members
            .iter()
            .filter_map(|m| self.by_rank(m.rank).map(|r| (r.addr, m.bits.clone())))
            .collect();
        for a in &proposal.merges {
            bits.extend(a.bits.iter().cloned());
        }
        let mut tree = TreeRecord {
            members: Vec::new(),
            ..self.tree.clone()
        };
        if tree.parent_group.is_none() {
            tree.parent_group = proposal.merges.iter().find_map(|a| a.parent_group.clone());
        }
        let mut sides: Vec<std::collections::VecDeque<(NodeId, Incarnation)>> =
            Vec::with_capacity(proposal.merges.len() + 1);
        sides.push(self.rows.iter().map(|r| (r.addr, r.incarnation)).collect());
        for a in &proposal.merges {
            sides.push(a.members.iter().copied().collect());
        }
        let start = proposal
            .merges
            .iter()
            .map(|a| a.next_rank)
            .fold(self.next_rank, u64::max);
        let mut rows = Vec::new();
        let mut rank = start;
        loop {
            let next = sides
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.front().map(|(a, inc)| (*inc, *a, i)))
                .min();
            let Some((_, _, i)) = next else {
                break;
            };
            let Some((addr, incarnation)) = sides.get_mut(i).and_then(|s| s.pop_front()) else {
                break;
            };
            if let Some(b) = bits.remove(&addr) {
                tree.set(rank, b);
            }
            rows.push(Row {
                addr,
                incarnation,
                rank,
                cw: 0,
                ccw: 0,
                flag: FLAG_ACTIVE,
            });
            rank = rank.saturating_add(1);
        }
        let mut t = Table {
            rows,
            next_rank: rank,
            tree,
        };
        t.relink();
        t
    }
}

/// The subject of a change, for priority rule 4: members by rank (older
/// first), newcomers (which have no rank yet) by address, after members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Subject {
    /// A member, by rank.
    Member(u64),
    /// A newcomer, by address.
    Joiner(NodeId),
}

/// The priority of a change among virtually simultaneous ones (seed 003
/// section III.A.2; DESIGN.md section 5). [`PriorityKey::outranks`] orders
/// them:
///
/// 1. a change already acknowledged (a takeover of a change whose
///    coordinator failed) first; between two coordinators' own changes this
///    rule is kept by locking instead: a member that ACKed a change refuses
///    every other until that one commits or is withdrawn;
/// 2. membership changes before tree changes before application-group
///    changes;
/// 3. the failure of the coordinator of a change in progress;
/// 4. the lowest subject: members by rank before newcomers by address;
///    with the same lowest subject, the change that removes more members
///    (it batches failures the other would leave for one more change:
///    after a partition, one coordinator may know of more unreachable
///    members than another);
/// 5. ties by the rank of the proposing coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PriorityKey {
    /// Rule 1: a takeover of an acknowledged change.
    pub takeover: bool,
    /// Rule 2.
    pub layer: Layer,
    /// Rule 3.
    pub coordinator_failure: bool,
    /// Rule 4.
    pub subject: Subject,
    /// Rule 4, with the same subject: how many members the change removes
    /// (more first).
    pub batch: u32,
    /// Rule 5: the originator's rank.
    pub coordinator_rank: u64,
}

impl PriorityKey {
    fn tuple(&self) -> (bool, Layer, bool, Subject, Reverse<u32>, u64) {
        (
            !self.takeover,
            self.layer,
            !self.coordinator_failure,
            self.subject,
            Reverse(self.batch),
            self.coordinator_rank,
        )
    }

    /// Whether a change with this key goes before one with `other`.
    pub fn outranks(&self, other: &PriorityKey) -> bool {
        self.tuple().cmp(&other.tuple()) == Ordering::Less
    }
}

/// Phase II: the change is committed; the whole new table goes along (the
/// newcomer installs it; members check it against their own computation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The change.
    pub proposal: Proposal,
    /// The table of the new view `proposal.view`.
    pub table: Table,
}

/// A member's status in a coordinator-failure election (CO_FAIL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CoStatus {
    /// It does not hold the change (never ACKed it, or holds another).
    Unknown,
    /// It ACKed the change and waits for the COMMIT (finished phase I).
    PhaseI,
    /// It committed the change.
    Committed,
    /// It coordinates the change and is alive: the election is off.
    Driving,
}

/// The messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// A newcomer asks to join (to the group address). `attempt` counts its
    /// requests since it started joining.
    MJoinReq {
        /// Requests sent before this one.
        attempt: u32,
        /// It rejoins after the group excluded it while it was running
        /// (not paused): a one-way or flapping link may be the cause.
        rejoin: bool,
        /// Above level 1: it comes as a parent of this child set.
        child: Option<ChildClaim>,
        /// It is not a candidate for automatic re-parenting.
        declined: bool,
    },
    /// The coordinator refuses a join for good (unicast to the newcomer),
    /// unlike `JOIN_WAIT`, which asks it to keep trying.
    JoinRefused {
        /// Why.
        reason: JoinRefusal,
    },
    /// The group is busy, or holds this newcomer down: keep asking
    /// (unicast to a newcomer).
    JoinWait {
        /// Milliseconds the hold-down still lasts (0: just busy).
        held_down_ms: u64,
    },
    /// Phase I of a join (to the group; resent by unicast).
    AgreeJ {
        /// The change.
        proposal: Proposal,
        /// Sent by a coordinator that took over from a failed one.
        takeover: bool,
    },
    /// Phase I of a failure or leave (to the group; resent by unicast).
    AgreeL {
        /// The change.
        proposal: Proposal,
        /// Sent by a coordinator that took over from a failed one.
        takeover: bool,
    },
    /// Phase I of a merge of subgroups (to the group; resent by unicast to
    /// the base view's members, which alone ACK it).
    AgreeM {
        /// The change.
        proposal: Proposal,
        /// Sent by a coordinator that took over from a failed one.
        takeover: bool,
    },
    /// A subgroup's lowest rank offers its subgroup to the lowest rank of
    /// an older subgroup of the same group (unicast; the envelope's view is
    /// the offering subgroup's).
    MergeOffer {
        /// The offering subgroup's rank high-water mark.
        next_rank: u64,
        /// Its members, oldest first.
        members: Vec<(NodeId, Incarnation)>,
        /// The tree bits of those of its members that have some.
        bits: Vec<(NodeId, MemberBits)>,
        /// Its level (a leader ignores an offer of another level).
        level: u8,
        /// Its recorded parent group.
        parent_group: Option<GroupRef>,
    },
    /// Acknowledges an AGREE (unicast to its sender). Also resent by a
    /// member that waits too long for the COMMIT (a nudge).
    AgreeAck {
        /// The change's id.
        proposal: ViewId,
    },
    /// Refuses an AGREE: the sender holds another change (unicast).
    Busy {
        /// The refused change.
        refused: ViewId,
        /// The change the sender holds.
        locked: ViewId,
        /// Its priority as the sender knows it.
        key: PriorityKey,
    },
    /// The coordinator withdraws a change that lost to a higher-priority
    /// one (to the group, and by unicast to a member that still holds it).
    Abort {
        /// The withdrawn change.
        proposal: ViewId,
    },
    /// Phase II (to the group; by unicast to a newcomer or to a member that
    /// missed it).
    Commit(Commit),
    /// Coordinator failure (to the group): the sender suspects `suspect`,
    /// the coordinator of `proposal`, and states its own status; `reply`
    /// marks an answer to another member's CO_FAIL.
    CoFail {
        /// The change whose COMMIT did not come.
        proposal: ViewId,
        /// The suspected coordinator's rank.
        suspect: u64,
        /// The sender's status.
        status: CoStatus,
        /// An answer rather than an initiation.
        reply: bool,
    },
    /// Ring monitoring: are you alive? (unicast to the clockwise neighbour).
    Query,
    /// Ring monitoring: alive. `heartbeat` marks the unprompted one every
    /// member sends its monitor each query interval.
    Reply {
        /// Unprompted.
        heartbeat: bool,
    },
    /// The sender does not consider the receiver a member of its view (the
    /// envelope's view).
    NotMember,
    /// The lowest-rank member announces the group (to the group).
    Announce {
        /// Members in the view.
        size: u32,
    },
}

/// Why a join is refused for good ([`Msg::JoinRefused`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JoinRefusal {
    /// The newcomer's claim does not fit this group's level: it comes as
    /// a parent of a child set at level `claimed`, and this group is at
    /// level `level` (a parent group must be exactly one level up).
    LevelMismatch {
        /// This group's level.
        level: u8,
        /// The level of the child set the newcomer claims.
        claimed: u8,
    },
}

impl JoinRefusal {
    /// Whether it names levels that exist.
    pub fn is_valid(&self) -> bool {
        match self {
            JoinRefusal::LevelMismatch { level, claimed } => {
                (1..=MAX_LEVEL).contains(level) && (1..=MAX_LEVEL).contains(claimed)
            }
        }
    }
}

/// The fields of a CO_FAIL ([`Msg::CoFail`]), as its handler takes them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CoFail {
    /// The change whose COMMIT is overdue.
    pub(crate) proposal: ViewId,
    /// The rank of the suspected coordinator.
    pub(crate) suspect: u64,
    /// Where the sender stands in that change.
    pub(crate) status: CoStatus,
    /// It answers another CO_FAIL.
    pub(crate) reply: bool,
}

/// The kinds of [`Msg`], for counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MsgKind {
    /// [`Msg::MJoinReq`].
    MJoinReq,
    /// [`Msg::JoinWait`].
    JoinWait,
    /// [`Msg::JoinRefused`].
    JoinRefused,
    /// [`Msg::AgreeJ`].
    AgreeJ,
    /// [`Msg::AgreeL`].
    AgreeL,
    /// [`Msg::AgreeM`].
    AgreeM,
    /// [`Msg::MergeOffer`].
    MergeOffer,
    /// [`Msg::AgreeAck`].
    AgreeAck,
    /// [`Msg::Busy`].
    Busy,
    /// [`Msg::Abort`].
    Abort,
    /// [`Msg::Commit`].
    Commit,
    /// [`Msg::CoFail`].
    CoFail,
    /// [`Msg::Query`].
    Query,
    /// [`Msg::Reply`].
    Reply,
    /// [`Msg::NotMember`].
    NotMember,
    /// [`Msg::Announce`].
    Announce,
}

impl Msg {
    /// Its kind.
    pub fn kind(&self) -> MsgKind {
        match self {
            Msg::MJoinReq { .. } => MsgKind::MJoinReq,
            Msg::JoinWait { .. } => MsgKind::JoinWait,
            Msg::JoinRefused { .. } => MsgKind::JoinRefused,
            Msg::AgreeJ { .. } => MsgKind::AgreeJ,
            Msg::AgreeL { .. } => MsgKind::AgreeL,
            Msg::AgreeM { .. } => MsgKind::AgreeM,
            Msg::MergeOffer { .. } => MsgKind::MergeOffer,
            Msg::AgreeAck { .. } => MsgKind::AgreeAck,
            Msg::Busy { .. } => MsgKind::Busy,
            Msg::Abort { .. } => MsgKind::Abort,
            Msg::Commit(_) => MsgKind::Commit,
            Msg::CoFail { .. } => MsgKind::CoFail,
            Msg::Query => MsgKind::Query,
            Msg::Reply { .. } => MsgKind::Reply,
            Msg::NotMember => MsgKind::NotMember,
            Msg::Announce { .. } => MsgKind::Announce,
        }
    }

    /// The AGREE message for `proposal` (AGREE_J, AGREE_M or AGREE_L by
    /// its shape).
    pub fn agree(proposal: Proposal, takeover: bool) -> Msg {
        if proposal.is_join() {
            Msg::AgreeJ { proposal, takeover }
        } else if proposal.is_merge() {
            Msg::AgreeM { proposal, takeover }
        } else {
            Msg::AgreeL { proposal, takeover }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode_body, encode_body};

    fn inc(i: u8) -> Incarnation {
        Incarnation::from_parts(1000 + u64::from(i), [i; 10])
    }

    #[test]
    fn priority_rules_in_order() {
        let base = PriorityKey {
            takeover: false,
            layer: Layer::Physical,
            coordinator_failure: false,
            subject: Subject::Member(5),
            batch: 1,
            coordinator_rank: 3,
        };
        let takeover = PriorityKey {
            takeover: true,
            subject: Subject::Joiner(NodeId::v4(10, 0, 0, 9, 1)),
            ..base
        };
        assert!(takeover.outranks(&base));
        let app = PriorityKey {
            layer: Layer::Application,
            subject: Subject::Member(0),
            ..base
        };
        assert!(base.outranks(&app));
        let cofail = PriorityKey {
            coordinator_failure: true,
            subject: Subject::Member(9),
            ..base
        };
        assert!(cofail.outranks(&base));
        let lower = PriorityKey {
            subject: Subject::Member(1),
            coordinator_rank: 9,
            ..base
        };
        assert!(lower.outranks(&base));
        let join = PriorityKey {
            subject: Subject::Joiner(NodeId::v4(10, 0, 0, 1, 1)),
            ..base
        };
        assert!(base.outranks(&join));
        let join2 = PriorityKey {
            subject: Subject::Joiner(NodeId::v4(10, 0, 0, 2, 1)),
            ..base
        };
        assert!(join.outranks(&join2));
        let bigger_batch = PriorityKey {
            batch: 2,
            coordinator_rank: 9,
            ..base
        };
        assert!(bigger_batch.outranks(&base));
        assert!(lower.outranks(&bigger_batch));
        let tie = PriorityKey {
            coordinator_rank: 4,
            ..base
        };
        assert!(base.outranks(&tie));
        assert!(!base.outranks(&base));
    }

    #[test]
    fn envelope_roundtrip_and_heartbeat_size() {
        let env = Envelope {
            group: "lan-1".into(),
            view: ViewId {
                number: 12,
                seq: 0,
                coordinator: inc(1),
            },
            msg: Msg::Reply { heartbeat: true },
            life: None,
        };
        let bytes = encode_body(&env).unwrap();
        assert_eq!(decode_body::<Envelope>(&bytes).unwrap(), env);
        // 1 + 5 (name) + 1 + 18 (view: number, seq, coordinator) + 1 + 1
        // + 1 (no life): the figure docs/protocol.md uses.
        assert_eq!(bytes.len(), 28);
        // Above level 1 the life takes 17 more bytes (an incarnation, as
        // the view id's coordinator is encoded).
        let upper = Envelope {
            life: Some(inc(2)),
            ..env
        };
        let bytes = encode_body(&upper).unwrap();
        assert_eq!(decode_body::<Envelope>(&bytes).unwrap(), upper);
        assert_eq!(bytes.len(), 28 + 17);
    }
}
