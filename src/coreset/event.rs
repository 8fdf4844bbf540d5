//! What the core-set reports and shows, the vocabulary of the layers
//! above: a [`Member`], the [`CoreSetEvent`]s the daemon drains, the
//! [`ViewSnapshot`] `msctl view --json` prints, and a member's
//! [`ChangeRole`] in the change in progress.

use super::msg::JoinRefusal;
use super::table::Row;
use super::tree::{TreeOp, TreeOpError, TreeRecord};
use crate::id::{Incarnation, NodeId, ViewId};
use crate::time::Instant;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A member as the layer above sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Its rank (0 for the founder; never reused). While this mserver is
    /// not a member yet, its own `me.rank` is `u64::MAX`.
    pub rank: u64,
    /// Its address.
    pub addr: NodeId,
    /// Its incarnation.
    pub incarnation: Incarnation,
}

impl From<&Row> for Member {
    fn from(r: &Row) -> Self {
        Member {
            rank: r.rank,
            addr: r.addr,
            incarnation: r.incarnation,
        }
    }
}

/// Whether a change is in progress at this member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeState {
    /// No change in progress: ring monitoring runs.
    Idle,
    /// This member holds a change (ACKed or coordinates it), or is joining.
    Changing,
}

/// What `msctl view --json` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewSnapshot {
    /// The group name.
    pub group: String,
    /// The latest commit: the view number and the application commits
    /// since ([`NO_VIEW`](super::NO_VIEW) while joining).
    pub view: ViewId,
    /// The membership change that installed the view (its number, commit
    /// 0, and the member that coordinated it; [`NO_VIEW`](super::NO_VIEW) while joining).
    pub installed: ViewId,
    /// Idle or changing.
    pub state: ChangeState,
    /// This mserver.
    pub me: Member,
    /// The members, sorted by rank (empty while joining).
    pub members: Vec<Member>,
    /// Whether this mserver is a member of a view.
    pub joined: bool,
    /// Addresses whose rejoin the group holds down (they were failed
    /// again and again after rejoining: a one-way or flapping link).
    pub held_down: Vec<HeldDown>,
    /// The group's tree record (level, parent group, parent bits); while
    /// joining, the level this member joins at and nothing else.
    pub tree: TreeRecord,
}

/// What the core reports to the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreSetEvent {
    /// A new view is installed here.
    ViewInstalled {
        /// Its id.
        view: ViewId,
        /// Its members, sorted by rank.
        members: Vec<Member>,
        /// Members admitted by this change (a newcomer also lists itself).
        joined: Vec<Member>,
        /// Members removed as failed.
        failed: Vec<Member>,
        /// Members removed because they left.
        left: Vec<Member>,
        /// When this member first learned of the change: the coordinator
        /// when it detected the failure, got the first join request or was
        /// asked to leave; a member when the AGREE came; a newcomer when it
        /// started joining.
        change_started: Instant,
        /// This member in the new view.
        me: Member,
        /// The table's rank high-water mark (part of the table, so that
        /// checkers can compare whole tables).
        next_rank: u64,
        /// The view came from a merge of subgroups: its number may jump
        /// (by more than one) and every member's rank is new.
        merged: bool,
    },
    /// This member took a new incarnation (on a rejoin after exclusion):
    /// the daemon must stamp its packets with it from now on (the runtime's
    /// `SetIncarnation`). The core sends nothing with the new incarnation
    /// until a later input.
    NewIncarnation(Incarnation),
    /// This member learned that the group failed it (`NOT_MEMBER`, a view
    /// without it, or a member already past its view); a rejoin with a new
    /// incarnation follows at once.
    Excluded {
        /// The last view it had installed.
        view: ViewId,
    },
    /// The voluntary leave is done (or timed out); the daemon exits.
    Left,
    /// A tree change committed (in the view `view`, right after its
    /// `ViewInstalled`): every member of the view gets it, views in order.
    TreeCommitted {
        /// The view the change installed.
        view: ViewId,
        /// The member that submitted it (in the base view).
        originator: Option<Member>,
        /// The change.
        op: TreeOp,
    },
    /// A tree change submitted here no longer fits the group (a failure or
    /// another change went first and made it invalid): it was dropped.
    TreeRefused {
        /// The change.
        op: TreeOp,
        /// Why it does not fit.
        error: TreeOpError,
    },
    /// While joining: the group's coordinator refused this member for
    /// good (a claim that does not fit the group's level). The core keeps
    /// asking (the refusal may come from a stale group of the same name);
    /// the layer above decides whether to give up.
    JoinRefused {
        /// Why.
        reason: JoinRefusal,
    },
    /// Application changes committed by the core-set (in the view `view`,
    /// right after its `ViewInstalled`): every member of the view gets the
    /// same payloads in the same order, views in order.
    AppCommitted {
        /// The view the change installed.
        view: ViewId,
        /// The member that submitted them (in the base view).
        originator: Option<Member>,
        /// The payloads, in submission order.
        payloads: Vec<Vec<u8>>,
    },
    /// The group holds this (rejoining) member down: it was failed again
    /// and again after rejoining (a one-way or flapping link). It keeps
    /// asking, and is admitted when the hold-down ends.
    HeldDown {
        /// How long the group said the hold-down still lasts.
        remaining: Duration,
    },
    /// The member this one monitors (its clockwise neighbour) changed: the
    /// daemon keeps an OS-level watch on it (e.g. a TCP connection) and
    /// reports its death with [`Core::handle_unreachable`](crate::sansio::Core::handle_unreachable).
    Watch(Option<NodeId>),
}

/// This member's part in the change in progress, for tests and tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeRole {
    /// It coordinates the change.
    Coordinator {
        /// The change's id (the view it installs).
        proposal: ViewId,
        /// It took over from a failed coordinator.
        takeover: bool,
        /// Phase I is over and it waits `commit_delay` before the COMMIT.
        delaying: bool,
        /// ACKs received.
        acked: usize,
        /// ACKs expected.
        expected: usize,
        /// An AGREE_J (a join) rather than an AGREE_L.
        join: bool,
    },
    /// It ACKed the change and waits for the COMMIT.
    Participant {
        /// The change's id.
        proposal: ViewId,
        /// The coordinator it waits for.
        coordinator: NodeId,
        /// A coordinator-failure election is running.
        electing: bool,
    },
}

/// A member held down by the group: it rejoined after an exclusion and was
/// failed again, repeatedly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldDown {
    /// Its address.
    pub addr: NodeId,
    /// Failures counted in a row (each within the flap window of its
    /// re-admission).
    pub strikes: u32,
    /// How much longer (milliseconds) its rejoin requests are answered
    /// `JOIN_WAIT`.
    pub remaining_ms: u64,
}
